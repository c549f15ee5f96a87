//! Scores of model outputs: top-1 / top-k, per-class accuracy, mean squared error and
//! ROC AUC.

use anyhow::{anyhow, bail, Result};
use edgeopt_ir::{Tensor, TensorData};
use serde::Serialize;

/// Index of the largest element (the first one on ties, as numpy's argmax); NaN never
/// wins.
pub fn argmax(t: &Tensor) -> usize {
    argmax_in(t, 0..t.len())
}

/// [`argmax`] over elements `range` of `t`, as an offset from `range.start`.
pub fn argmax_in(t: &Tensor, range: std::ops::Range<usize>) -> usize {
    let mut best = 0;
    let mut best_v = f64::NEG_INFINITY;
    for (k, i) in range.enumerate() {
        let v = t.data.get_f64(i);
        if v > best_v {
            best = k;
            best_v = v;
        }
    }
    best
}

/// Position of class `label` when elements `range` of `t` are sorted from largest to
/// smallest, ties in index order and NaN last (so rank 0 is [`argmax_in`]); a label
/// outside the range ranks last of all.
pub fn rank_of(t: &Tensor, range: std::ops::Range<usize>, label: usize) -> usize {
    if label >= range.len() {
        return usize::MAX;
    }
    let key = |i: usize| {
        let v = t.data.get_f64(range.start + i);
        if v.is_nan() {
            f64::NEG_INFINITY
        } else {
            v
        }
    };
    let lv = key(label);
    (0..range.len())
        .filter(|&i| key(i) > lv || (i < label && key(i) == lv))
        .count()
}

/// Class labels from `[N]`, `[N, 1]` or one-hot `[N, C]` arrays.
pub fn labels_of(labels: &Tensor) -> Result<Vec<usize>> {
    let to_class =
        |v: i64| -> Result<usize> { usize::try_from(v).map_err(|_| anyhow!("negative label {v}")) };
    match labels.shape.as_slice() {
        [_] | [_, 1] => (0..labels.len())
            .map(|i| to_class(labels.data.get_i64(i)))
            .collect(),
        [n, c] => Ok((0..*n)
            .map(|i| {
                let row = Tensor::new(
                    vec![*c],
                    TensorData::F32(
                        (0..*c)
                            .map(|k| labels.data.get_f64(i * c + k) as f32)
                            .collect(),
                    ),
                )
                .expect("row has c elements");
                argmax(&row)
            })
            .collect()),
        s => bail!("labels must have shape [N], [N, 1] or one-hot [N, C], got {s:?}"),
    }
}

/// Accuracy of one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassAccuracy {
    pub class: usize,
    /// Samples labelled with this class.
    pub samples: usize,
    pub correct: usize,
    /// Percent (0 for a class with no sample).
    pub accuracy: f64,
}

/// Accuracy of every class `0..=max label`, from predictions and labels of the same
/// samples.
pub fn per_class(predictions: &[usize], labels: &[usize]) -> Vec<ClassAccuracy> {
    let classes = labels.iter().max().map_or(0, |&m| m + 1);
    let mut samples = vec![0usize; classes];
    let mut correct = vec![0usize; classes];
    for (&p, &l) in predictions.iter().zip(labels) {
        samples[l] += 1;
        if p == l {
            correct[l] += 1;
        }
    }
    (0..classes)
        .map(|c| ClassAccuracy {
            class: c,
            samples: samples[c],
            correct: correct[c],
            accuracy: if samples[c] == 0 {
                0.0
            } else {
                100.0 * correct[c] as f64 / samples[c] as f64
            },
        })
        .collect()
}

/// Mean squared difference of two equally long sequences (0 for empty ones).
pub fn mse(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for (x, y) in a.into_iter().zip(b) {
        sum += (x - y) * (x - y);
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// Area under the ROC curve of `scores` (higher: more likely positive) against
/// `positive`: the probability that a random positive scores above a random negative,
/// ties counting one half (the Mann-Whitney U statistic, which is what
/// sklearn.metrics.roc_auc_score computes). None when either class is empty or a score
/// is NaN.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    if scores.len() != positive.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average rank (1-based) of each group of tied scores; sum over positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg * order[i..=j].iter().filter(|&&k| positive[k]).count() as f64;
        i = j + 1;
    }
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_first_on_ties() {
        let t = Tensor::from_f32(vec![1, 4], vec![0.1, 0.7, 0.7, f32::NAN]).unwrap();
        assert_eq!(argmax(&t), 1);
        assert_eq!(argmax_in(&t, 2..4), 0);
    }

    #[test]
    fn rank_zero_is_argmax_and_ranks_follow_sorted_order() {
        let t = Tensor::from_f32(vec![6], vec![0.3, f32::NAN, 0.9, 0.3, -1.0, 0.9]).unwrap();
        // Sorted: 2 (0.9), 5 (0.9), 0 (0.3), 3 (0.3), 4 (-1), 1 (NaN); ties keep index
        // order. ranks[l] is label l's position in that order.
        let sorted = [2, 5, 0, 3, 4, 1];
        let ranks: Vec<usize> = (0..6).map(|l| rank_of(&t, 0..6, l)).collect();
        let expect: Vec<usize> = (0..6)
            .map(|l| sorted.iter().position(|&k| k == l).unwrap())
            .collect();
        assert_eq!(ranks, expect);
        assert_eq!(rank_of(&t, 0..6, argmax(&t)), 0);
        assert_eq!(rank_of(&t, 0..6, 6), usize::MAX);
    }

    #[test]
    fn labels_forms() {
        let l = Tensor::new(vec![3], TensorData::U8(vec![3, 0, 9])).unwrap();
        assert_eq!(labels_of(&l).unwrap(), vec![3, 0, 9]);
        let oh = Tensor::from_f32(vec![2, 3], vec![0., 1., 0., 0., 0., 1.]).unwrap();
        assert_eq!(labels_of(&oh).unwrap(), vec![1, 2]);
        let neg = Tensor::from_i64(vec![2], vec![1, -1]).unwrap();
        assert!(labels_of(&neg).is_err());
    }

    #[test]
    fn per_class_counts() {
        let r = per_class(&[0, 1, 1, 2, 0], &[0, 1, 0, 2, 2]);
        let got: Vec<(usize, usize)> = r.iter().map(|c| (c.samples, c.correct)).collect();
        assert_eq!(got, vec![(2, 1), (1, 1), (2, 1)]);
        assert_eq!(r[0].accuracy, 50.0);
    }

    /// The definition: over all (positive, negative) pairs, 1 when the positive scores
    /// higher, 1/2 on a tie.
    fn auc_by_pairs(scores: &[f64], positive: &[bool]) -> f64 {
        let (mut sum, mut pairs) = (0.0, 0usize);
        for (i, &si) in scores.iter().enumerate() {
            for (j, &sj) in scores.iter().enumerate() {
                if positive[i] && !positive[j] {
                    pairs += 1;
                    sum += if si > sj {
                        1.0
                    } else if si == sj {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        sum / pairs as f64
    }

    #[test]
    fn auc_equals_the_pairwise_definition() {
        // Scores with ties (quantized errors tie often), labels from a fixed LCG.
        let mut s = 12345u64;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s >> 33
        };
        for _ in 0..20 {
            let n = 2 + (next() % 40) as usize;
            let scores: Vec<f64> = (0..n).map(|_| (next() % 7) as f64 * 0.5).collect();
            let mut positive: Vec<bool> = (0..n).map(|_| next() % 3 == 0).collect();
            positive[0] = true;
            positive[1] = false;
            let got = roc_auc(&scores, &positive).unwrap();
            let want = auc_by_pairs(&scores, &positive);
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(roc_auc(&[f64::NAN, 0.2], &[true, false]), None);
        // Perfect separation and its reverse.
        assert_eq!(roc_auc(&[0.1, 0.2, 0.9], &[false, false, true]), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.2, 0.1], &[false, false, true]), Some(0.0));
    }

    #[test]
    fn mse_of_sequences() {
        assert_eq!(mse([1.0, 2.0], [1.0, 4.0]), 2.0);
        assert_eq!(mse(std::iter::empty(), std::iter::empty()), 0.0);
    }
}
