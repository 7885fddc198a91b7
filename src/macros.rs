//! Small declarative macros used across the crate.

/// `impl Display` for types whose text form is their `as_str(self) -> &'static str`
/// (reasons, modes, kinds: the word used in messages, status and metric labels).
macro_rules! display_as_str {
    ($($ty:ty),+ $(,)?) => {
        $(impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        })+
    };
}
