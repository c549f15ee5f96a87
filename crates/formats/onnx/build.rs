//! Compiles the vendored `proto/onnx.proto` into Rust types with protox (pure Rust,
//! no `protoc` on the build machine) and prost-build.

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["proto/onnx.proto"], ["proto"]).expect("parse proto/onnx.proto");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("generate Rust code for onnx.proto");
}
