//! Prints the operator's CustomResourceDefinitions as YAML.
//!
//! `cargo run --bin crdgen` prints all CRDs as one multi-document stream;
//! `cargo run --bin crdgen -- --out crds/` writes one file per CRD.
use std::path::PathBuf;

use zitadel_metadata_operator::crd;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out: Option<PathBuf> = match (args.next().as_deref(), args.next()) {
        (Some("--out"), Some(dir)) => Some(dir.into()),
        (None, _) => None,
        _ => return Err("usage: crdgen [--out DIR]".into()),
    };
    for crd in crd::all() {
        let yaml = crd::to_yaml(&crd)?;
        match &out {
            Some(dir) => std::fs::write(dir.join(crd::file_name(&crd)), yaml)?,
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}
