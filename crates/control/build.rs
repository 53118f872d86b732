//! Compiles `proto/ballast/control/v1/control.proto` with protox (pure Rust, no system `protoc`),
//! generates the tonic/prost code from the resulting descriptor set, and writes the encoded set to
//! `OUT_DIR` for the reflection service.

use std::path::PathBuf;

const PROTO_FILE: &str = "ballast/control/v1/control.proto";
const DESCRIPTOR_FILE: &str = "ballast_control_v1_descriptor.bin";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    println!(
        "cargo:rerun-if-changed={}",
        proto_root.join(PROTO_FILE).display()
    );

    let mut compiler = protox::Compiler::new([&proto_root])?;
    // Imports (google/protobuf/*.proto) go into the set so reflection clients can resolve them;
    // source info keeps the proto comments for generated docs and `grpcurl describe`.
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_file(PROTO_FILE)?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join(DESCRIPTOR_FILE),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
