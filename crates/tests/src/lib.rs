//! Cross-crate tests live in tests/, one file per concern. This library holds what
//! several of them read from ../shared/data, so each data set is loaded one way, and
//! the verification harness of generated C ([`harness`]: host gcc, arm-none-eabi-gcc
//! and qemu) with the MLPerf Tiny inputs it is fed ([`samples`]).

pub mod harness;
pub mod samples;

pub mod cifar {
    //! The CIFAR-10 test set of ../shared/data (`cifar10/test_x.npy`: u8 NHWC
    //! [10000, 32, 32, 3], sorted by class, 1000 images each).

    use edgeopt_ir::{Tensor, TensorData};
    use std::path::Path;

    /// Pixels per image.
    pub const IMAGE: usize = 32 * 32 * 3;

    /// Raw pixels (0..=255 as f32, NHWC) of test images `rows`, one Vec per image.
    pub fn images(data: &Path, rows: &[usize]) -> Vec<Vec<f32>> {
        let x = edgeopt_npy::read(&data.join("cifar10/test_x.npy")).expect("read CIFAR-10");
        let TensorData::U8(px) = &x.data else {
            panic!("CIFAR-10 test_x is not u8")
        };
        rows.iter()
            .map(|&i| {
                px[i * IMAGE..(i + 1) * IMAGE]
                    .iter()
                    .map(|&p| p as f32)
                    .collect()
            })
            .collect()
    }

    /// Test images `rows` as one f32 batch [n, 32, 32, 3] of raw pixel values.
    pub fn batch(data: &Path, rows: &[usize]) -> Tensor {
        Tensor::from_f32(vec![rows.len(), 32, 32, 3], images(data, rows).concat())
            .expect("batch shape")
    }

    /// `n` rows spread evenly over the class-sorted file (every `10000 / n`-th).
    pub fn spread(n: usize) -> Vec<usize> {
        let step = 10_000 / n.max(1);
        (0..n).map(|k| k * step).collect()
    }
}

/// Whether arm-none-eabi-gcc, arm-none-eabi-size and qemu-system-arm are installed.
/// Without them the qemu stages print that they skipped, except under
/// EDGEOPT_REQUIRE_DATA=1 (CI), where that is a failure.
pub fn arm_toolchain() -> bool {
    if harness::arm_toolchain_available() {
        return true;
    }
    if std::env::var("EDGEOPT_REQUIRE_DATA").is_ok_and(|v| v == "1") {
        panic!(
            "EDGEOPT_REQUIRE_DATA=1 but arm-none-eabi-gcc / arm-none-eabi-size / qemu-system-arm \
             are not installed (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)"
        );
    }
    eprintln!("skipped: arm-none-eabi-gcc or qemu-system-arm not installed");
    false
}

/// TFLite's float -> int8 quantization of a model input: round half away from zero,
/// add the zero point, clamp.
pub fn quantize_i8(x: f32, scale: f32, zp: i64) -> i8 {
    ((x / scale).round() as i64 + zp).clamp(-128, 127) as i8
}

pub mod toycar {
    //! The one real ToyCar clip of the MLPerf anomaly-detection reference submission:
    //! 40 log-mel slices of 640 float32 values (the AD autoencoder's input).

    use std::path::Path;

    pub const SAMPLE: &str = "mlperf-tiny/benchmark/reference_submissions/anomaly_detection/datasets/dcase01/normal_id_01_00000000_hist_librosa.bin";
    /// Slices in the clip and values per slice.
    pub const SLICES: usize = 40;
    pub const SLICE: usize = 640;

    /// The clip's values, slice after slice (`SLICES * SLICE`).
    pub fn values(data: &Path) -> Vec<f32> {
        let bytes = std::fs::read(data.join(SAMPLE)).expect("read the AD sample");
        assert_eq!(
            bytes.len(),
            SLICES * SLICE * 4,
            "AD sample is float32 (40, 640)"
        );
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

pub mod tflm {
    //! TensorFlow Lite Micro as an oracle (`scripts/oracle/tflm_run.py`): the `tflm`
    //! numerics that the generated C must reproduce bit for bit.

    use edgeopt_ir::{Tensor, TensorData};
    use std::path::Path;

    /// Runs `model` (.tflite, one input, one output) under TFLite Micro on the samples
    /// of `x` (stacked on axis 0, in the model's input dtype), one at a time; returns
    /// the outputs stacked the same way. `work` holds the .npy files. Panics with the
    /// oracle's stderr on failure.
    pub fn run(model: &Path, x: &Tensor, work: &Path) -> Tensor {
        std::fs::create_dir_all(work).expect("create work dir");
        let (xin, yout) = (work.join("tflm_in.npy"), work.join("tflm_out.npy"));
        edgeopt_npy::write(&xin, x).expect("write inputs");
        edgeopt_testkit::run_oracle("tflm_run.py", &[model, &xin, &yout]);
        edgeopt_npy::read(&yout).expect("read TFLM outputs")
    }

    /// [`run`], with TFLite Micro's refusal (an op or type it lacks) as `Err`.
    pub fn try_run(model: &Path, x: &Tensor, work: &Path) -> Result<Tensor, String> {
        Ok(try_run_outputs(model, x, 1, work)?.remove(0))
    }

    /// [`try_run`] for a model with `outputs` outputs: each stacked over the samples,
    /// in the model's order.
    pub fn try_run_outputs(
        model: &Path,
        x: &Tensor,
        outputs: usize,
        work: &Path,
    ) -> Result<Vec<Tensor>, String> {
        std::fs::create_dir_all(work).map_err(|e| e.to_string())?;
        let (xin, yout) = (work.join("tflm_in.npy"), work.join("tflm_out.npy"));
        edgeopt_npy::write(&xin, x).map_err(|e| e.to_string())?;
        let n = outputs.max(1).to_string();
        edgeopt_testkit::try_oracle(
            "tflm_run.py",
            &[model, &xin, &yout, Path::new("--outputs"), Path::new(&n)],
        )?;
        (0..outputs.max(1))
            .map(|k| {
                let p = match k {
                    0 => yout.clone(),
                    k => work.join(format!("tflm_out.{k}.npy")),
                };
                edgeopt_npy::read(&p).map_err(|e| e.to_string())
            })
            .collect()
    }

    /// Little-endian bytes of an int8 or float32 tensor (the C harness's I/O format).
    pub fn bytes(t: &Tensor) -> Vec<u8> {
        match &t.data {
            TensorData::I8(v) => v.iter().map(|&b| b as u8).collect(),
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            d => panic!("harness I/O of type {}", d.dtype()),
        }
    }

    /// [`run`] on `inputs`: int8 samples of `sample_shape` each (batch dimension
    /// excluded), back to back; returns the output bytes back to back (int8 or float32
    /// outputs, what the generated C writes).
    pub fn outputs(model: &Path, sample_shape: &[usize], inputs: &[u8], work: &Path) -> Vec<u8> {
        let per: usize = sample_shape.iter().product();
        assert!(
            per > 0 && inputs.len().is_multiple_of(per),
            "inputs are not whole samples"
        );
        let mut shape = vec![inputs.len() / per];
        shape.extend_from_slice(sample_shape);
        let x = Tensor::new(
            shape,
            TensorData::I8(inputs.iter().map(|&b| b as i8).collect()),
        )
        .expect("input shape");
        bytes(&run(model, &x, work))
    }
}

pub mod exporters {
    //! The exporter corpus of ../shared/data (`exporters/`, see its README.md): model
    //! files as PyTorch's and Keras's current exporters write them, each with its
    //! input samples, float calibration samples and reference outputs, as listed in
    //! `manifest.json`.

    use std::path::{Path, PathBuf};

    /// One model file of the corpus (the manifest's fields that tests use).
    #[derive(Debug, Clone)]
    pub struct Entry {
        /// Path under `exporters/`, e.g. `onnx/mnist_cnn.ts17.onnx`.
        pub file: String,
        /// `onnx` or `tflite`.
        pub format: String,
        /// The exporter variant, e.g. `ts17`, `dynamo18`, `batch1.int8`.
        pub exporter: String,
        /// 4 samples in the file's own input dtype and layout.
        pub input: PathBuf,
        /// The same samples as float (the float model's input), when given.
        pub input_float: Option<PathBuf>,
        /// 32 float calibration samples in the float model's layout and range.
        pub calib: Option<PathBuf>,
        /// Reference outputs (onnxruntime / LiteRT builtin), one per model output.
        pub expected: Vec<PathBuf>,
        /// A dynamic-batch Keras conversion: `expected` was made with the 4 samples as
        /// one batch (fixed-batch files and ONNX files: one sample at a time).
        pub dynbatch: bool,
        /// `dynamic`: dynamic-range (hybrid) weights, float activations.
        pub dynamic_range: bool,
    }

    impl Entry {
        pub fn path(&self, data: &Path) -> PathBuf {
            data.join("exporters").join(&self.file)
        }

        /// A float-weight, float-activation file (what `quantize` starts from).
        pub fn is_float32(&self) -> bool {
            self.format == "onnx" || self.exporter.ends_with(".fp32")
        }

        /// The file name without folder, for tables.
        pub fn name(&self) -> &str {
            self.file.rsplit('/').next().unwrap_or(&self.file)
        }
    }

    /// Every file the manifest lists as written (`status == "OK"`), in manifest order.
    pub fn entries(data: &Path) -> Vec<Entry> {
        let dir = data.join("exporters");
        let text = std::fs::read_to_string(dir.join("manifest.json")).expect("read manifest");
        let m: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
        let path = |v: &serde_json::Value| v.as_str().map(|s| dir.join(s));
        m["files"]
            .as_array()
            .expect("manifest files")
            .iter()
            .filter(|f| f["status"] == "OK")
            .map(|f| Entry {
                file: f["file"].as_str().expect("file").to_string(),
                format: f["format"].as_str().expect("format").to_string(),
                exporter: f["exporter"].as_str().unwrap_or_default().to_string(),
                input: path(&f["input"]).expect("input"),
                input_float: path(&f["input_float"]),
                calib: path(&f["calib"]),
                expected: f["expected"]
                    .as_array()
                    .map(|v| v.iter().filter_map(|e| path(&e["file"])).collect())
                    .unwrap_or_default(),
                dynbatch: f["batch"] == "dynbatch",
                dynamic_range: f["quant"] == "dynamic",
            })
            .collect()
    }
}

pub mod hostile {
    //! What the mutation tests (tflite_hostile.rs, onnx_hostile.rs) do with a mutant
    //! that imports: everything a user would do next — export it to both formats,
    //! compile it to C, quantize it (on two seeded random samples) and export and
    //! compile the result. Each stage may refuse with an error; none may panic.

    use edgeopt_compress::quant::ptq::{self, PtqOptions};
    use edgeopt_ir::{DType, Graph, Tensor};
    use std::panic::{catch_unwind, AssertUnwindSafe};

    /// Mutants whose activations (at batch 1) exceed this are not calibrated: running
    /// a model that legitimately needs gigabytes is not what these tests are about.
    pub const MAX_ACTIVATION_BYTES: usize = 32 << 20;

    fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    /// Runs `f`; a panic becomes a description naming `stage`.
    fn stage<T>(name: &str, f: impl FnOnce() -> T) -> Result<T, String> {
        catch_unwind(AssertUnwindSafe(f))
            .map_err(|p| format!("{name} panicked: {}", panic_message(p.as_ref())))
    }

    fn export_and_compile(g: &Graph, what: &str) -> Result<(), String> {
        stage(&format!("{what} TFLite export"), || {
            edgeopt_tflite::export(g).is_ok()
        })?;
        stage(&format!("{what} ONNX export"), || {
            edgeopt_onnx::export(g).is_ok()
        })?;
        let target = edgeopt_codegen::Target::by_name("generic").expect("generic target");
        stage(&format!("{what} C generation"), || {
            edgeopt_codegen::compile(g, target).is_ok()
        })?;
        Ok(())
    }

    /// Seeded calibration samples for the graph's float inputs at batch 1, or `None`
    /// when an input is not float or the activations are too large to run.
    fn samples(g: &Graph, seed: u64) -> Option<Vec<Vec<Tensor>>> {
        let shapes = edgeopt_ir::shape::bind_input_shapes(g, 1).ok()?;
        let facts = edgeopt_ir::shape::infer_graph(g, &shapes).ok()?;
        let bytes = facts.iter().flatten().try_fold(0usize, |acc, f| {
            let n = edgeopt_ir::checked_numel(&f.shape).ok()?;
            acc.checked_add(n.checked_mul(f.dtype.storage_bytes(1).max(1))?)
        })?;
        if bytes > MAX_ACTIVATION_BYTES {
            return None;
        }
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        (0..2)
            .map(|_| {
                g.inputs
                    .iter()
                    .zip(&shapes)
                    .map(|(&i, s)| {
                        if g.values[i].dtype != DType::F32 {
                            return None;
                        }
                        let n = s.iter().product::<usize>();
                        Tensor::from_f32(s.clone(), (0..n).map(|_| next()).collect()).ok()
                    })
                    .collect()
            })
            .collect()
    }

    /// The downstream stages on an imported mutant; `Err` describes a panic.
    pub fn downstream(g: &Graph, seed: u64) -> Result<(), String> {
        export_and_compile(g, "imported")?;
        let Some(samples) = stage("calibration set-up", || samples(g, seed))? else {
            return Ok(());
        };
        let q = stage("quantize", || ptq::run(g, &samples, &PtqOptions::default()))?;
        if let Ok(r) = q {
            export_and_compile(&r.quantized, "quantized")?;
        }
        Ok(())
    }
}
