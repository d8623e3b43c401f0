//! Compiles `proto/inference.proto` with protox (pure Rust: no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["proto/inference.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Tensor bytes stay `Bytes`: sliced from the received message, not copied.
        .bytes(".inference")
        // prost's codec, with undecodable messages INVALID_ARGUMENT instead of INTERNAL.
        .codec_path("crate::grpc::Codec")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
