//! Cross-crate tests live in tests/, one file per concern. This library holds what
//! several of them read from ../shared/data, so each data set is loaded one way.

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

    /// Runs `model` (.tflite, one int8 input, one int8 or float32 output) under TFLite
    /// Micro on `inputs` (int8 samples of `sample_shape` each, back to back, batch
    /// dimension excluded) one sample at a time; returns the outputs back to back as
    /// little-endian bytes (what the generated C writes). `work` holds the .npy files.
    /// Panics with the oracle's stderr on failure.
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
        std::fs::create_dir_all(work).expect("create work dir");
        let (xin, yout) = (work.join("tflm_in.npy"), work.join("tflm_out.npy"));
        edgeopt_npy::write(&xin, &x).expect("write inputs");
        edgeopt_testkit::run_oracle("tflm_run.py", &[model, &xin, &yout]);
        let y = edgeopt_npy::read(&yout).expect("read TFLM outputs");
        match y.data {
            TensorData::I8(v) => v.iter().map(|&b| b as u8).collect(),
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            d => panic!("TFLM output is {}, int8 or float32 expected", d.dtype()),
        }
    }
}
