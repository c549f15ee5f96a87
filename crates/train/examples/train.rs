//! Stand-alone `edgeopt train` / `edgeopt demo` (same arguments as the CLI), so the
//! training benchmarks can run before or without the full CLI:
//!
//!     cargo run --release -p edgeopt-train --example train -- train --arch lenet5 --dataset ../shared/data/mnist -o lenet5.onnx
//!     cargo run --release -p edgeopt-train --example train -- demo

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Train(Box<edgeopt_train::TrainArgs>),
    Demo(edgeopt_train::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Train(a) => edgeopt_train::train_command(&a),
        Cmd::Demo(a) => edgeopt_train::demo_command(&a),
    }
}
