//! `edgeopt compile MODEL --target T -o DIR`: self-contained C for a microcontroller
//! (see `edgeopt_codegen`). The footprint (flash: weights + code estimate; RAM: arena +
//! scratch + stack estimate) is reported against the target before anything is
//! written, and a model that does not fit is refused with the budget and the need.

use crate::load_model;
use anyhow::{Context, Result};
use edgeopt_codegen::{compile, write_dir, Footprint, Target};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct CompileArgs {
    /// Model file (.onnx or .tflite), int8-quantized.
    pub model: PathBuf,
    /// A device: a built-in name (cortex-m0, cortex-m4, cortex-m7, generic, stm32f446,
    /// nrf52840, ...; see devices/) or a path to a device file (.toml).
    #[arg(long, default_value = "cortex-m4", value_name = "NAME|PATH")]
    pub target: String,
    /// Output directory (written atomically: replaced as a whole).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Override the target's RAM budget (bytes).
    #[arg(long)]
    pub max_ram: Option<u64>,
    /// Override the target's flash budget (bytes).
    #[arg(long)]
    pub max_flash: Option<u64>,
    /// Print the footprint as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Compiles, checks the budget, writes the files; returns the footprint.
pub fn compile_command(args: &CompileArgs) -> Result<Footprint> {
    let mut target: Target = args.target.parse().map_err(anyhow::Error::msg)?;
    if args.max_ram.is_some() {
        target.ram_bytes = args.max_ram;
    }
    if args.max_flash.is_some() {
        target.flash_bytes = args.max_flash;
    }
    let g = load_model(&args.model)?;
    let gen =
        compile(&g, &target).with_context(|| format!("cannot compile {}", args.model.display()))?;
    let fp = gen.footprint.clone();
    eprint!("{}", fp.render());
    fp.check()?;
    write_dir(&gen, &args.output)?;
    eprintln!(
        "wrote {} ({} layers): model.h, model.c, edgeopt_kernels.c, edgeopt_kernels.h, README.md",
        args.output.display(),
        gen.layers
    );
    Ok(fp)
}
