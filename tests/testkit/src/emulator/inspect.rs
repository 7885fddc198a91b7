//! Read-only views of secrets the emulator handed out, for tests that check they never leak
//! (e.g. into logs).

use super::Emulator;

impl Emulator {
    /// Every access token the token endpoint issued so far (JWT profile grant), in no order.
    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.with_state(|st| st.issued_tokens.keys().cloned().collect())
    }
}
