//! The flags of the default connection, shared by the operator and its `diff` subcommand.

use std::path::PathBuf;

use url::Url;

/// The default ZITADEL connection (single-tenant mode): the instance and where its token is.
#[derive(clap::Args, Debug, Clone)]
pub struct DefaultConnectionArgs {
    /// Base URL of the default ZITADEL instance (its custom domain), e.g.
    /// https://acme.zitadel.cloud. With a token flag this is the default connection, used by
    /// objects without spec.connectionRef (single-tenant mode); objects with one use that
    /// connection and its Secret. Omit both for multi-tenant mode, where every object must name
    /// a ZitadelConnection / ClusterZitadelConnection.
    #[arg(long, env = "ZITADEL_URL")]
    pub zitadel_url: Option<Url>,

    /// File holding a Personal Access Token of a ZITADEL service user (for `diff`, a read-only
    /// one suffices). The operator re-reads it on every call, so a rotated mounted Secret is
    /// picked up; it may appear after the start: until then the objects using the default
    /// connection report CredentialsUnavailable and /readyz is 503.
    #[arg(long, env = "ZITADEL_TOKEN_FILE", conflicts_with = "token_secret")]
    pub token_file: Option<PathBuf>,

    /// Kubernetes Secret holding the token, as NAMESPACE/NAME (key from --token-secret-key).
    /// The operator follows it with a watch of that one Secret; it may be created after the
    /// start.
    #[arg(long, env = "ZITADEL_TOKEN_SECRET")]
    pub token_secret: Option<String>,

    /// Key of the token in --token-secret.
    #[arg(long, env = "ZITADEL_TOKEN_SECRET_KEY", default_value = "token")]
    pub token_secret_key: String,
}
