//! Losses: cross-entropy with label smoothing, mean squared error, and knowledge
//! distillation (KL divergence at temperature T plus hard-label cross-entropy).

use crate::dyn_tensor::Result;
use crate::TrainError;
use burn::tensor::{activation, Device, Tensor, TensorData};

/// Smoothed one-hot targets `(1 - eps) * onehot + eps / classes`.
fn smoothed_targets(
    labels: &[u32],
    classes: usize,
    eps: f32,
    device: &Device,
) -> Result<Tensor<2>> {
    let mut t = vec![eps / classes as f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        let l = l as usize;
        if l >= classes {
            return Err(TrainError::Data(format!(
                "label {l} out of range for {classes} classes"
            )));
        }
        t[i * classes + l] += 1.0 - eps;
    }
    Ok(Tensor::from_data(
        TensorData::new(t, [labels.len(), classes]),
        device,
    ))
}

/// Mean cross-entropy of `logits [N, K]` against integer labels, with label
/// smoothing `eps` (0 = plain cross-entropy).
pub fn cross_entropy(logits: Tensor<2>, labels: &[u32], eps: f32) -> Result<Tensor<1>> {
    let [n, k] = logits.dims();
    if n != labels.len() {
        return Err(TrainError::Data(format!(
            "{n} logits rows for {} labels",
            labels.len()
        )));
    }
    if !(0.0..1.0).contains(&eps) {
        return Err(TrainError::Config(format!(
            "label smoothing {eps} not in [0, 1)"
        )));
    }
    let targets = smoothed_targets(labels, k, eps, &logits.device())?;
    let logp = activation::log_softmax(logits, 1);
    Ok((logp * targets).sum().neg().div_scalar(n as f32))
}

/// Mean squared error over all elements.
pub fn mse(pred: Tensor<2>, target: Tensor<2>) -> Result<Tensor<1>> {
    if pred.dims() != target.dims() {
        return Err(TrainError::Data(format!(
            "prediction {:?} vs target {:?}",
            pred.dims(),
            target.dims()
        )));
    }
    let n = pred.dims().iter().product::<usize>() as f32;
    let d = pred - target;
    Ok((d.clone() * d).sum().div_scalar(n))
}

/// Hinton et al. distillation: `alpha * T^2 * KL(p_teacher(T) || p_student(T)) +
/// (1 - alpha) * CE(student, labels)`, averaged over the batch. The T^2 factor keeps
/// the soft-target gradients' magnitude independent of T.
pub fn distillation(
    student: Tensor<2>,
    teacher: Tensor<2>,
    labels: &[u32],
    temperature: f32,
    alpha: f32,
) -> Result<Tensor<1>> {
    if student.dims() != teacher.dims() {
        return Err(TrainError::Data(format!(
            "student logits {:?} vs teacher {:?}",
            student.dims(),
            teacher.dims()
        )));
    }
    if temperature.is_nan() || temperature <= 0.0 || !(0.0..=1.0).contains(&alpha) {
        return Err(TrainError::Config(format!(
            "distillation needs T > 0 and alpha in [0, 1], got T={temperature} alpha={alpha}"
        )));
    }
    let n = student.dims()[0] as f32;
    let teacher = teacher.detach();
    let pt_log = activation::log_softmax(teacher.div_scalar(temperature), 1);
    let pt = pt_log.clone().exp();
    let ps_log = activation::log_softmax(student.clone().div_scalar(temperature), 1);
    let kl = (pt * (pt_log - ps_log)).sum().div_scalar(n);
    let soft = kl.mul_scalar(alpha * temperature * temperature);
    if alpha >= 1.0 {
        return Ok(soft);
    }
    let hard = cross_entropy(student, labels, 0.0)?;
    Ok(soft + hard.mul_scalar(1.0 - alpha))
}

/// Number of rows whose argmax equals the label.
pub fn correct(logits: &[f32], classes: usize, labels: &[u32]) -> usize {
    logits
        .chunks(classes)
        .zip(labels)
        .filter(|(row, &l)| argmax(row) == l as usize)
        .count()
}

/// Index of the largest element (first one on ties; NaN never wins).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}
