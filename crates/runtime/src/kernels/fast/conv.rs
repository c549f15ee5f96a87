//! Fast TFLite CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED on 8-bit activations.
//!
//! Same inputs, checks and output stage as `quantized::conv::tflite_conv` and
//! `quantized::fc::tflite_fc`; the accumulation is an im2col + packed GEMM
//! ([`super::gemm`]) for ordinary convolutions and fully-connected layers, and a
//! channel-vectorized direct loop for depthwise ones. Preparation returns `None`
//! whenever something is off (non-constant weights, grouped non-depthwise conv,
//! invalid parameters): the node then goes to the reference kernel, which reports the
//! error, so the fast path never changes what is accepted.

#[cfg(target_arch = "x86_64")]
use super::avx2::{self, Depthwise2, PackedPairs, Wide8};
#[cfg(target_arch = "x86_64")]
use super::avx512::{
    depthwise as depthwise512, igemm, padded_extent, DepthwiseWide, DwGeom, Indirection,
};
#[cfg(target_arch = "x86_64")]
use super::bytes_mut;
use super::gemm::{gemm, gemm_u8, PackedW, PackedW8};
#[cfg(target_arch = "x86_64")]
use super::maddubs::{self, MaddubsW};
use super::requant::{Requant, Wide};
use super::winograd::Winograd;
use super::{out_buffer, weight_dtype_ok, Aligned, Isa, Prepared};
use crate::error::Result;
use crate::kernels::quantized::common::{
    activation_range, per_channel, per_tensor, Affine, OutputStage, QInt, Rounding,
};
use crate::kernels::quantized::conv::{bias_i32, conv_geom, weights_i16, ConvGeom};
use crate::kernels::quantized::Numerics;
use crate::kernels::NodeCtx;
use edgeopt_ir::{Activation, ConvAttrs, Layout, Tensor};
use std::marker::PhantomData;

/// Constant weights and bias of a node (inputs 1 and 2), `None` if not constant.
fn const_weights<'t>(
    ctx: &NodeCtx,
    consts: &[Option<&'t Tensor>],
) -> Option<(&'t Tensor, Option<&'t Tensor>)> {
    let w = consts.get(1).copied().flatten()?;
    if !weight_dtype_ok(w) {
        return None;
    }
    let b = match ctx.node.input(2) {
        Some(_) => Some(consts.get(2).copied().flatten()?),
        None => None,
    };
    Some((w, b))
}

enum ConvImpl {
    Gemm(PackedW),
    /// u8 x i8 GEMM (AVX-VNNI), when the weights fit in i8.
    Gemm8(PackedW8),
    /// AVX-512 implicit GEMM with the output stage fused ([`super::avx512`]), when
    /// the weights fit in i8 and the stage has the one-step form.
    IGemm(PackedW8, Wide, PadLayout),
    /// AVX2 implicit i16 GEMM with the output stage fused ([`super::avx2`]), when the
    /// weights fit in i8 and the stage has the one-step form.
    #[cfg(target_arch = "x86_64")]
    IGemm2(PackedPairs, Wide8, PadLayout),
    /// Integer Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions on `vpmaddwd`
    /// ([`super::winograd`]): 2.25x fewer multiplies than the GEMM, bit-exact.
    Winograd(Box<Winograd>),
    /// AVX-512 depthwise (channel multiplier 1) with the output stage fused.
    #[cfg(target_arch = "x86_64")]
    DepthwiseWide(DepthwiseWide),
    /// AVX2 depthwise (channel multiplier 1) with the output stage fused.
    #[cfg(target_arch = "x86_64")]
    Depthwise2(Depthwise2),
    /// Weights `[kh*kw, M]` (a tap's channels contiguous) and bias.
    Depthwise {
        wt: Vec<i16>,
        bias: Vec<i32>,
    },
}

pub struct ConvKernel<T> {
    attrs: ConvAttrs,
    w_shape: Vec<usize>,
    isa: Isa,
    xq: Affine,
    imp: ConvImpl,
    requant: Requant,
    num: Numerics,
    /// Geometry of the last input shape.
    geom: Option<(Vec<usize>, ConvGeom)>,
    /// Rows of the implicit GEMM for that geometry (`None`: offsets too large for
    /// 32 bits, the reference kernel runs), and whether they read the input in place
    /// (`true`) or an im2col buffer.
    #[cfg(target_arch = "x86_64")]
    pad: Option<Padded>,
    /// Padded input layout of the AVX-512 depthwise kernel for that geometry.
    #[cfg(target_arch = "x86_64")]
    dw_geom: Option<DwGeom>,
    /// Zero-point-subtracted input (for im2col).
    x: Vec<i16>,
    a: Vec<i16>,
    /// Padded input minus its zero point, widened to i32 (AVX-512 depthwise).
    xw: Vec<i32>,
    /// Padded input minus its zero point as i16 (AVX2 implicit GEMM).
    xp16: Vec<i16>,
    /// Padded i16 input of the AVX2 depthwise kernel, cache-line aligned.
    xdw: Aligned<i16>,
    /// u8 input and patches of the u8 GEMM.
    xu: Vec<u8>,
    au: Vec<u8>,
    acc: Vec<i32>,
    _t: PhantomData<T>,
}

/// The u8 GEMM's packed weights when the ISA has it and everything fits: the zero
/// activation `zu = zp - T::MIN` must be a u8, the weights i8.
fn packed8<T: QInt>(
    isa: Isa,
    w: &[i16],
    n: usize,
    k: usize,
    bias: &[i32],
    zp: i32,
) -> Option<PackedW8> {
    if !isa.is_vnni() {
        return None;
    }
    packed8_any::<T>(w, n, k, bias, zp)
}

fn packed8_any<T: QInt>(w: &[i16], n: usize, k: usize, bias: &[i32], zp: i32) -> Option<PackedW8> {
    let zu = u8::try_from(zp - T::MIN).ok()?;
    PackedW8::new(w, n, k, bias, zu)
}

/// The AVX-512 GEMM's weights and output stage, when the ISA has it and both apply.
fn igemm_parts<T: QInt>(
    isa: Isa,
    w: &[i16],
    n: usize,
    k: usize,
    bias: &[i32],
    zp: i32,
    stage: &OutputStage,
) -> Option<(PackedW8, Wide)> {
    if !isa.is_avx512() || std::mem::size_of::<T>() != 1 {
        return None;
    }
    Some((
        packed8_any::<T>(w, n, k, bias, zp)?.group8(),
        Wide::new(stage)?,
    ))
}

/// The Winograd kernel of a 3x3, stride-1, dilation-1 convolution when the best
/// instruction set is AVX2 without AVX-512 (whose VNNI GEMM does 4x more multiplies
/// per instruction than `vpmaddwd`, more than Winograd saves) and the exactness bound
/// holds. The zero point must be a value of `T` (`|x - zp| <= 255`).
#[allow(clippy::too_many_arguments)]
fn winograd<T: QInt>(
    isa: Isa,
    wo: &[i16],
    m: usize,
    wshape: &[usize],
    a: &ConvAttrs,
    bias: &[i32],
    zp: i32,
    stage: &OutputStage,
) -> Option<Winograd> {
    let fits = isa.is_avx2_only()
        && std::mem::size_of::<T>() == 1
        && (T::MIN..=T::MAX).contains(&zp)
        // Few input channels (an image's 3): the transforms, padded to 16 channels,
        // cost more than the multiplies they save (measured: ResNet-8's first conv
        // 22.7 µs with Winograd, 11 µs with the GEMM).
        && matches!(*wshape, [_, _, _, c] if c >= 8)
        && a.group <= 1
        && is_3x3_unit_stride(wshape, a);
    if !fits {
        return None;
    }
    Winograd::new(isa, wo, m, wshape[3], bias, stage)
}

/// Whether the NHWC weights `[m, kh, kw, c]` are a 3x3 kernel applied with stride 1
/// and no dilation (Winograd; the row-sharing depthwise kernel).
fn is_3x3_unit_stride(wshape: &[usize], a: &ConvAttrs) -> bool {
    let ones = |v: &[usize]| v.iter().all(|&s| s == 1);
    matches!(*wshape, [_, 3, 3, _]) && ones(&a.strides) && ones(&a.dilations)
}

/// The implicit GEMM of a (non-grouped) convolution on AVX-512 (u8 quads) or AVX2
/// (i16 pairs): weights `[m, kh, kw, c]` repacked with `cp` channels ([`PadLayout`]).
#[allow(clippy::too_many_arguments)]
fn igemm_conv<T: QInt>(
    isa: Isa,
    wo: &[i16],
    m: usize,
    wshape: &[usize],
    a: &ConvAttrs,
    bias: &[i32],
    zp: i32,
    stage: &OutputStage,
) -> Option<ConvImpl> {
    if !(isa.is_avx512() || isa.is_avx2_only()) || std::mem::size_of::<T>() != 1 {
        return None;
    }
    let (kh, kw, c) = match *wshape {
        [_, kh, kw, c] => (kh, kw, c),
        [_, kw, c] => (1, kw, c),
        _ => return None,
    };
    let unit = if isa.is_avx512() { 4 } else { 2 };
    let lay = PadLayout::new(kw, c, a.dilations.last().copied().unwrap_or(1), unit);
    let taps = kh * kw;
    let mut wp = vec![0i16; m * taps * lay.cp];
    for (dst, src) in wp.chunks_exact_mut(lay.cp).zip(wo.chunks_exact(c)) {
        dst[..c].copy_from_slice(src);
    }
    if isa.is_avx512() {
        let (p, wide) = igemm_parts::<T>(isa, &wp, m, taps * lay.cp, bias, zp, stage)?;
        return Some(ConvImpl::IGemm(p, wide, lay));
    }
    #[cfg(target_arch = "x86_64")]
    {
        let p = PackedPairs::new(&wp, m, taps * lay.cp, bias)?;
        Some(ConvImpl::IGemm2(p, Wide8::new(stage)?, lay))
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// How an implicit GEMM reads a convolution's input: from a copy padded in space
/// (borders hold the value of a zero-point input, so every tap is in bounds) and,
/// when needed, in channels (`cp >= c`, the extra channels zero-point inputs with zero
/// weights), so that every run of a GEMM row is a whole number of `unit` elements
/// (4-byte quads for the AVX-512 GEMM, i16 pairs for the AVX2 one).
/// - `row_run` (width dilation 1): a kernel row is one contiguous run of `kw * cp`
///   elements, so a GEMM row is `kh` runs;
/// - otherwise each tap is a run of `cp` elements (`cp` a multiple of `unit`).
#[derive(Debug, Clone, Copy)]
struct PadLayout {
    cp: usize,
    row_run: bool,
    unit: usize,
}

impl PadLayout {
    fn new(kw: usize, c: usize, dil_w: usize, unit: usize) -> PadLayout {
        let row_run = dil_w == 1;
        let cp = if (row_run && (kw * c).is_multiple_of(unit)) || c.is_multiple_of(unit) {
            c
        } else {
            c.next_multiple_of(unit)
        };
        PadLayout { cp, row_run, unit }
    }
}

/// The padded input of one geometry and the GEMM rows reading it.
#[cfg(target_arch = "x86_64")]
struct Padded {
    /// Padded height and width, and the leading padding.
    hp: usize,
    wp: usize,
    pt: usize,
    pl: usize,
    /// `None` when the offsets exceed 32 bits (the reference kernel then runs).
    ind: Option<Indirection>,
}

#[cfg(target_arch = "x86_64")]
impl Padded {
    fn new(g: &ConvGeom, lay: PadLayout) -> Padded {
        let ((pt, hp), (pl, wp)) = (padded_extent(&g.h), padded_extent(&g.w));
        let cp = lay.cp;
        // The layout was chosen from the attributes; the geometry must agree.
        let consistent = if lay.row_run {
            g.w.dilation == 1 && (g.w.kernel * cp).is_multiple_of(lay.unit)
        } else {
            cp.is_multiple_of(lay.unit)
        };
        let taps = if lay.row_run {
            g.h.kernel
        } else {
            g.h.kernel * g.w.kernel
        };
        let mut offs = Vec::with_capacity(g.out_pixels() * taps);
        for n in 0..g.n {
            for oy in 0..g.h.output {
                for ox in 0..g.w.output {
                    for ky in 0..g.h.kernel {
                        let row = (n * hp + oy * g.h.stride + ky * g.h.dilation) * wp;
                        let base = (row + ox * g.w.stride) * cp;
                        if lay.row_run {
                            offs.push(base);
                        } else {
                            offs.extend((0..g.w.kernel).map(|kx| base + kx * g.w.dilation * cp));
                        }
                    }
                }
            }
        }
        Padded {
            hp,
            wp,
            pt,
            pl,
            ind: consistent
                .then(|| Indirection::new(g.out_pixels(), taps, offs))
                .flatten(),
        }
    }

    fn len(&self, g: &ConvGeom, cp: usize) -> usize {
        g.n * self.hp * self.wp * cp
    }

    /// Writes `x` (NHWC, `c` channels) as u8 into the interior of `xp` (whose padding
    /// already holds `zu`).
    fn fill<T: QInt>(&self, isa: Isa, g: &ConvGeom, cp: usize, x: &[T], xp: &mut [u8]) {
        self.fill_with(
            g,
            cp,
            x,
            xp,
            |s, d| to_u8(isa, s, d),
            |s| (s.to_i32() - T::MIN) as u8,
        )
    }

    /// Writes `x - zp` (NHWC, `c` channels) as i16 into the interior of `xp` (whose
    /// padding already holds 0).
    fn fill_i16<T: QInt>(
        &self,
        isa: Isa,
        g: &ConvGeom,
        cp: usize,
        x: &[T],
        zp: i32,
        xp: &mut [i16],
    ) {
        self.fill_with(
            g,
            cp,
            x,
            xp,
            |s, d| offset(isa, s, zp, d),
            |s| (s.to_i32() - zp) as i16,
        )
    }

    /// The interior of the padded buffer from `x`: `run` converts a contiguous run,
    /// `one` a single value (pixels of a few channels, converted inline).
    fn fill_with<T: QInt, E>(
        &self,
        g: &ConvGeom,
        cp: usize,
        x: &[T],
        xp: &mut [E],
        run: impl Fn(&[T], &mut [E]),
        one: impl Fn(T) -> E,
    ) {
        let (h, w, c) = (g.h.input, g.w.input, g.c);
        for n in 0..g.n {
            let at = |iy: usize| ((n * self.hp + iy + self.pt) * self.wp + self.pl) * cp;
            let img = &x[n * h * w * c..][..h * w * c];
            if img.is_empty() {
                continue;
            }
            if cp == c && self.wp == w {
                // No horizontal padding: the interior rows are contiguous.
                run(img, &mut xp[at(0)..][..h * w * c]);
                continue;
            }
            for (iy, src) in img.chunks_exact(w * c).enumerate() {
                let dst = &mut xp[at(iy)..];
                if cp == c {
                    run(src, &mut dst[..w * c]);
                } else {
                    // A few channels per pixel: inline, no call per pixel.
                    for (s, d) in src.chunks_exact(c).zip(dst.chunks_exact_mut(cp)) {
                        for (d, &s) in d.iter_mut().zip(s) {
                            *d = one(s);
                        }
                    }
                }
            }
        }
    }
}

/// `dst[i] = src[i] - T::MIN` as u8 (i8: `x + 128`; u8: unchanged).
pub fn to_u8<T: QInt>(isa: Isa, src: &[T], dst: &mut [u8]) {
    #[inline(always)]
    fn body<T: QInt>(src: &[T], dst: &mut [u8]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = (s.to_i32() - T::MIN) as u8;
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<T: QInt>(src: &[T], dst: &mut [u8]) {
        body(src, dst)
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2.
        return unsafe { avx2(src, dst) };
    }
    let _ = isa;
    body(src, dst)
}

impl<T: QInt> ConvKernel<T> {
    pub fn new(
        ctx: &NodeCtx,
        a: &ConvAttrs,
        consts: &[Option<&Tensor>],
        num: Numerics,
        isa: Isa,
    ) -> Option<Self> {
        if a.layout != Layout::Nhwc || std::mem::size_of::<T>() != 1 {
            return None;
        }
        let (w, b) = const_weights(ctx, consts)?;
        let rank = w.shape.len();
        if !(rank == 3 || rank == 4) {
            return None;
        }
        let m = w.shape[0];
        let cg = w.shape[rank - 1];
        if m == 0 || cg == 0 {
            return None;
        }
        let group = a.group.max(1);
        let depthwise = cg == 1 && group > 1;
        if group > 1 && !depthwise {
            return None;
        }
        let xq = per_tensor(ctx, ctx.in_quant(0), "input").ok()?;
        let yq = per_tensor(ctx, ctx.out_quant(0), "output").ok()?;
        let (wscales, wzps) = per_channel(ctx, ctx.in_quant(1), m, "weights").ok()?;
        let wo = weights_i16(ctx, w, &wzps).ok()?;
        let bias = bias_i32(ctx, b, m).ok()?;
        let rounding = crate::kernels::quantized::conv::output_rounding::<T>(num, depthwise, m);
        let stage = OutputStage::new(
            xq.scale,
            &wscales,
            yq,
            activation_range::<T>(a.activation, yq),
        )
        .with_rounding(rounding);
        let k = wo.len() / m.max(1);
        let imp = if depthwise {
            let taps = k; // [M, kh, kw, 1]
            let mut wt = vec![0i16; taps * m];
            for oc in 0..m {
                for t in 0..taps {
                    wt[t * m + oc] = wo[oc * taps + t];
                }
            }
            #[cfg(target_arch = "x86_64")]
            if isa.is_avx512() && m == group {
                if let Some(dw) = DepthwiseWide::new(&wt, taps, m, &bias, &stage) {
                    return Some(Self::build(
                        a,
                        w,
                        isa,
                        xq,
                        ConvImpl::DepthwiseWide(dw),
                        &stage,
                        num,
                    ));
                }
            }
            #[cfg(target_arch = "x86_64")]
            if isa.is_avx2_only() && m == group {
                let rows3 = is_3x3_unit_stride(&w.shape, a);
                if let Some(dw) = Depthwise2::new(&wt, taps, m, &bias, &stage, rows3) {
                    let imp = ConvImpl::Depthwise2(dw);
                    return Some(Self::build(a, w, isa, xq, imp, &stage, num));
                }
            }
            ConvImpl::Depthwise { wt, bias }
        } else if let Some(wg) = winograd::<T>(isa, &wo, m, &w.shape, a, &bias, xq.zp, &stage) {
            ConvImpl::Winograd(Box::new(wg))
        } else if let Some(imp) = igemm_conv::<T>(isa, &wo, m, &w.shape, a, &bias, xq.zp, &stage) {
            imp
        } else {
            match packed8::<T>(isa, &wo, m, k, &bias, xq.zp) {
                Some(p) => ConvImpl::Gemm8(p),
                None => ConvImpl::Gemm(PackedW::new(&wo, m, k, &bias)),
            }
        };
        Some(Self::build(a, w, isa, xq, imp, &stage, num))
    }

    fn build(
        a: &ConvAttrs,
        w: &Tensor,
        isa: Isa,
        xq: Affine,
        imp: ConvImpl,
        stage: &OutputStage,
        num: Numerics,
    ) -> Self {
        ConvKernel {
            attrs: a.clone(),
            w_shape: w.shape.clone(),
            isa,
            xq,
            imp,
            requant: Requant::new(stage),
            num,
            geom: None,
            #[cfg(target_arch = "x86_64")]
            pad: None,
            #[cfg(target_arch = "x86_64")]
            dw_geom: None,
            x: Vec::new(),
            a: Vec::new(),
            xw: Vec::new(),
            xp16: Vec::new(),
            xdw: Aligned::default(),
            xu: Vec::new(),
            au: Vec::new(),
            acc: Vec::new(),
            _t: PhantomData,
        }
    }
}

impl<T: QInt> Prepared for ConvKernel<T> {
    fn run(
        &mut self,
        ctx: &NodeCtx,
        inputs: &[Option<&Tensor>],
        out: &mut Option<Tensor>,
    ) -> Result<()> {
        let x = crate::kernels::quantized::common::input(ctx, inputs, 0)?;
        let xs = T::slice(x)
            .ok_or_else(|| ctx.error(format!("input must be {}, got {}", T::DTYPE, x.dtype())))?;
        let g = match &self.geom {
            Some((s, g)) if *s == x.shape => *g,
            _ => {
                let g = conv_geom(ctx, &self.attrs, &x.shape, &self.w_shape)?;
                if g.m != self.requant.channels() {
                    return Err(ctx.error("weights changed since preparation"));
                }
                self.geom = Some((x.shape.clone(), g));
                #[cfg(target_arch = "x86_64")]
                if let ConvImpl::IGemm(pw, _, lay) = &self.imp {
                    let pad = Padded::new(&g, *lay);
                    // The padding is written once; runs rewrite the interior only.
                    self.xu.clear();
                    self.xu.resize(pad.len(&g, lay.cp), pw.zu);
                    self.pad = Some(pad);
                }
                #[cfg(target_arch = "x86_64")]
                if let ConvImpl::IGemm2(_, _, lay) = &self.imp {
                    let pad = Padded::new(&g, *lay);
                    // The padding (0 = a zero-point input) is written once; runs
                    // rewrite the interior only.
                    self.xp16.clear();
                    self.xp16.resize(pad.len(&g, lay.cp), 0);
                    self.pad = Some(pad);
                }
                #[cfg(target_arch = "x86_64")]
                if let ConvImpl::DepthwiseWide(dw) = &self.imp {
                    let geo = DwGeom::new(&g, dw.cpad());
                    // Zero padding written once; runs rewrite the interior only.
                    self.xw.clear();
                    self.xw.resize(geo.len(), 0);
                    self.dw_geom = Some(geo);
                }
                #[cfg(target_arch = "x86_64")]
                if let ConvImpl::Depthwise2(dw) = &self.imp {
                    let mut geo = DwGeom::new(&g, dw.cpad());
                    if dw.rows3 {
                        // The kernel's taps are stored in this order.
                        geo.toff = avx2::ROWS3_ORDER.iter().map(|&t| geo.toff[t]).collect();
                    }
                    // Zero padding written once; runs rewrite the interior only.
                    self.xdw = Aligned::zeroed(geo.len());
                    self.dw_geom = Some(geo);
                }
                g
            }
        };
        let m = g.m;
        // On the stack: a steady-state run allocates nothing.
        let (shape4, shape3) = ([g.n, g.h.output, g.w.output, m], [g.n, g.w.output, m]);
        let shape: &[usize] = if x.shape.len() == 4 { &shape4 } else { &shape3 };
        let pixels = g.out_pixels();
        let isa = self.isa;
        if let ConvImpl::Winograd(wg) = &mut self.imp {
            if !Winograd::applies(&g) {
                return self.reference(ctx, inputs, out);
            }
            wg.run(
                isa,
                &g,
                xs,
                self.xq.zp,
                out_buffer::<T>(out, shape, pixels * m),
            );
            return Ok(());
        }
        let y = out_buffer::<T>(out, shape, pixels * m);
        match &self.imp {
            ConvImpl::Gemm(pw) => {
                let lda = pw.k_pad();
                let direct = g.h.kernel == 1
                    && g.w.kernel == 1
                    && g.h.stride == 1
                    && g.w.stride == 1
                    && g.h.pad_begin == 0
                    && g.w.pad_begin == 0
                    && g.h.output == g.h.input
                    && g.w.output == g.w.input;
                self.a.resize(pixels * lda, 0);
                if direct && lda == g.c {
                    offset(isa, xs, self.xq.zp, &mut self.a);
                } else {
                    self.x.resize(xs.len(), 0);
                    offset(isa, xs, self.xq.zp, &mut self.x);
                    im2col(&g, &self.x, 0, &mut self.a, lda);
                }
                let ldc = pw.n_pad();
                self.acc.resize(pixels * ldc, 0);
                gemm(isa, &self.a, lda, pixels, pw, &mut self.acc, ldc);
                for (row, yr) in self.acc.chunks_exact(ldc).zip(y.chunks_exact_mut(m)) {
                    self.requant.row(isa, row, yr);
                }
            }
            ConvImpl::Gemm8(pw) => {
                let lda = pw.k_pad();
                self.xu.resize(xs.len(), 0);
                to_u8(isa, xs, &mut self.xu);
                self.au.resize(pixels * lda, 0);
                im2col(&g, &self.xu, pw.zu, &mut self.au, lda);
                let ldc = pw.n_pad();
                self.acc.resize(pixels * ldc, 0);
                gemm_u8(isa, &self.au, lda, pixels, pw, &mut self.acc, ldc);
                for (row, yr) in self.acc.chunks_exact(ldc).zip(y.chunks_exact_mut(m)) {
                    self.requant.row(isa, row, yr);
                }
            }
            #[cfg(target_arch = "x86_64")]
            ConvImpl::IGemm(pw, wide, lay) => {
                let Some(pad @ Padded { ind: Some(ind), .. }) = &self.pad else {
                    return self.reference(ctx, inputs, out);
                };
                pad.fill(isa, &g, lay.cp, xs, &mut self.xu);
                igemm(isa, &self.xu, ind, pw, wide, bytes_mut(y), m);
            }
            #[cfg(target_arch = "x86_64")]
            ConvImpl::IGemm2(pw, wide, lay) => {
                let Some(pad @ Padded { ind: Some(ind), .. }) = &self.pad else {
                    return self.reference(ctx, inputs, out);
                };
                pad.fill_i16(isa, &g, lay.cp, xs, self.xq.zp, &mut self.xp16);
                avx2::igemm(isa, &self.xp16, ind, pw, wide, T::MIN < 0, bytes_mut(y), m);
            }
            #[cfg(not(target_arch = "x86_64"))]
            ConvImpl::IGemm(..) => unreachable!("AVX-512 is x86_64 only"),
            #[cfg(target_arch = "x86_64")]
            ConvImpl::DepthwiseWide(dw) => {
                let geo = self.dw_geom.as_ref().expect("built with the geometry");
                geo.fill(isa, &g, xs, self.xq.zp, &mut self.xw);
                depthwise512(isa, geo, &self.xw, dw, bytes_mut(y));
            }
            #[cfg(target_arch = "x86_64")]
            ConvImpl::Depthwise2(dw) => {
                let geo = self.dw_geom.as_ref().expect("built with the geometry");
                let xp = self.xdw.as_mut_slice();
                geo.fill_i16(isa, &g, xs, self.xq.zp, xp);
                avx2::depthwise(isa, geo, xp, dw, T::MIN < 0, bytes_mut(y));
            }
            ConvImpl::Winograd(_) => unreachable!("handled above"),
            ConvImpl::Depthwise { wt, bias } => {
                self.a.resize(xs.len(), 0);
                offset(isa, xs, self.xq.zp, &mut self.a);
                self.acc.resize(2 * m, 0);
                depthwise(isa, &g, &self.a, wt, bias, &self.requant, &mut self.acc, y);
            }
        }
        Ok(())
    }
}

impl<T: QInt> ConvKernel<T> {
    /// The reference kernel (geometries the fast one cannot address).
    fn reference(
        &self,
        ctx: &NodeCtx,
        inputs: &[Option<&Tensor>],
        out: &mut Option<Tensor>,
    ) -> Result<()> {
        let mut r =
            crate::kernels::quantized::conv::tflite_conv::<T>(ctx, &self.attrs, self.num, inputs)?;
        *out = Some(r.remove(0));
        Ok(())
    }
}

/// The row indirection of `rows` plain rows `lda` apart, rebuilt only when the row
/// count changes (`None`: offsets beyond 32 bits).
#[cfg(target_arch = "x86_64")]
fn strided_rows(ind: &mut Option<Indirection>, rows: usize, lda: usize) -> Option<&Indirection> {
    if ind.as_ref().is_none_or(|i| i.rows != rows) {
        *ind = Indirection::strided(rows, lda);
    }
    ind.as_ref()
}

/// The rows of `k` inputs in `xs`, each converted by `conv` into `buf` at a stride of
/// `lda`, the `lda - k` trailing columns set to `pad` (they meet zero weights).
fn padded_rows<T: QInt, E: Copy>(
    xs: &[T],
    k: usize,
    lda: usize,
    pad: E,
    buf: &mut Vec<E>,
    conv: impl Fn(&[T], &mut [E]),
) {
    let rows = xs.len() / k;
    buf.resize(rows * lda, pad);
    if lda == k {
        conv(xs, buf);
        return;
    }
    for (src, dst) in xs.chunks_exact(k).zip(buf.chunks_exact_mut(lda)) {
        conv(src, &mut dst[..k]);
        dst[k..].fill(pad);
    }
}

/// `dst[i] = src[i] - zp` as i16.
pub fn offset<T: QInt>(isa: Isa, src: &[T], zp: i32, dst: &mut [i16]) {
    #[inline(always)]
    fn body<T: QInt>(src: &[T], zp: i32, dst: &mut [i16]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = (s.to_i32() - zp) as i16;
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<T: QInt>(src: &[T], zp: i32, dst: &mut [i16]) {
        body(src, zp, dst)
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2.
        return unsafe { avx2(src, zp, dst) };
    }
    let _ = isa;
    body(src, zp, dst)
}

/// Patches of every output pixel, `(ky, kx, c)` order, padding positions `pad` (the
/// value standing for a zero-point input), each row `lda` long (trailing columns
/// `pad` too: their weights are 0). Group count must be 1. A kernel row that lies
/// inside the input (dilation 1) is one contiguous run of `kw * c` values, copied at
/// once.
pub fn im2col<E: Copy>(g: &ConvGeom, x: &[E], pad: E, a: &mut [E], lda: usize) {
    let (ih, iw, c) = (g.h.input as isize, g.w.input as isize, g.c);
    let (oh, ow, kw) = (g.h.output, g.w.output, g.w.kernel);
    let k_len = g.h.kernel * kw * c;
    let run = kw * c;
    let mut rows = a.chunks_exact_mut(lda);
    for n in 0..g.n {
        for oy in 0..oh {
            for ox in 0..ow {
                let row = rows.next().expect("a holds one row per pixel");
                let ix0 = (ox * g.w.stride) as isize - g.w.pad_begin as isize;
                let inside_w = g.w.dilation == 1 && ix0 >= 0 && ix0 + kw as isize <= iw;
                let mut k = 0;
                for ky in 0..g.h.kernel {
                    let iy =
                        (oy * g.h.stride + ky * g.h.dilation) as isize - g.h.pad_begin as isize;
                    if iy < 0 || iy >= ih {
                        row[k..k + run].fill(pad);
                        k += run;
                        continue;
                    }
                    let line = (n * g.h.input + iy as usize) * g.w.input;
                    if inside_w {
                        let base = (line + ix0 as usize) * c;
                        row[k..k + run].copy_from_slice(&x[base..base + run]);
                        k += run;
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = ix0 + (kx * g.w.dilation) as isize;
                        let dst = &mut row[k..k + c];
                        if ix >= 0 && ix < iw {
                            let base = (line + ix as usize) * c;
                            dst.copy_from_slice(&x[base..base + c]);
                        } else {
                            dst.fill(pad);
                        }
                        k += c;
                    }
                }
                row[k_len..].fill(pad);
            }
        }
    }
}

/// Depthwise convolution with fused requantization, one output pixel at a time.
/// `x` is the zero-point-subtracted input, `wt` the weights `[kh*kw, M]`, `acc` a
/// scratch of at least `2*M` i32.
#[allow(clippy::too_many_arguments)]
pub fn depthwise<T: QInt>(
    isa: Isa,
    g: &ConvGeom,
    x: &[i16],
    wt: &[i16],
    bias: &[i32],
    rq: &Requant,
    acc: &mut [i32],
    y: &mut [T],
) {
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn body<T: QInt>(
        isa: Isa,
        g: &ConvGeom,
        x: &[i16],
        wt: &[i16],
        bias: &[i32],
        rq: &Requant,
        acc: &mut [i32],
        y: &mut [T],
    ) {
        let (kh, kw, m, c) = (g.h.kernel, g.w.kernel, g.m, g.c);
        let mult = g.mg();
        let (ih, iw) = (g.h.input as isize, g.w.input as isize);
        let (oh, ow) = (g.h.output, g.w.output);
        let (out, xrow) = acc.split_at_mut(m);
        let xrow = &mut xrow[..m];
        let mut yrows = y.chunks_exact_mut(m);
        for n in 0..g.n {
            for oy in 0..oh {
                for ox in 0..ow {
                    out.copy_from_slice(bias);
                    for ky in 0..kh {
                        let iy =
                            (oy * g.h.stride + ky * g.h.dilation) as isize - g.h.pad_begin as isize;
                        if iy < 0 || iy >= ih {
                            continue;
                        }
                        for kx in 0..kw {
                            let ix = (ox * g.w.stride + kx * g.w.dilation) as isize
                                - g.w.pad_begin as isize;
                            if ix < 0 || ix >= iw {
                                continue;
                            }
                            let base =
                                ((n * g.h.input + iy as usize) * g.w.input + ix as usize) * c;
                            let xs = &x[base..base + c];
                            let t = ky * kw + kx;
                            let ws = &wt[t * m..(t + 1) * m];
                            if mult == 1 {
                                for ((o, &xv), &wv) in out.iter_mut().zip(xs).zip(ws) {
                                    *o = o.wrapping_add(xv as i32 * wv as i32);
                                }
                            } else {
                                for (ch, &xv) in xs.iter().enumerate() {
                                    for e in &mut xrow[ch * mult..(ch + 1) * mult] {
                                        *e = xv as i32;
                                    }
                                }
                                for ((o, &xv), &wv) in out.iter_mut().zip(&*xrow).zip(ws) {
                                    *o = o.wrapping_add(xv * wv as i32);
                                }
                            }
                        }
                    }
                    let yr = yrows.next().expect("one output row per pixel");
                    rq.row(isa, out, yr);
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx2<T: QInt>(
        isa: Isa,
        g: &ConvGeom,
        x: &[i16],
        wt: &[i16],
        bias: &[i32],
        rq: &Requant,
        acc: &mut [i32],
        y: &mut [T],
    ) {
        body(isa, g, x, wt, bias, rq, acc, y)
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_avx2() {
        // SAFETY: `Isa::Avx2` exists only when the CPU has AVX2.
        return unsafe { avx2(isa, g, x, wt, bias, rq, acc, y) };
    }
    body(isa, g, x, wt, bias, rq, acc, y)
}

pub struct FcKernel<T> {
    keep_num_dims: bool,
    isa: Isa,
    xq: Affine,
    packed: PackedW,
    packed8: Option<PackedW8>,
    /// AVX-512 GEMM with the fused output stage, and its rows for the last row count.
    igemm: Option<(PackedW8, Wide)>,
    /// AVX2 GEMM with the fused output stage (CPUs without AVX-512).
    #[cfg(target_arch = "x86_64")]
    igemm2: Option<(PackedPairs, Wide8)>,
    /// The `vpmaddubsw` kernel for a few rows, when its cost model takes the weights
    /// (output stage: `igemm2`'s).
    #[cfg(target_arch = "x86_64")]
    maddubs: Option<MaddubsW>,
    #[cfg(target_arch = "x86_64")]
    ind: Option<Indirection>,
    requant: Requant,
    a: Vec<i16>,
    au: Vec<u8>,
    acc: Vec<i32>,
    shape: Vec<usize>,
    _t: PhantomData<T>,
}

impl<T: QInt> FcKernel<T> {
    pub fn new(
        ctx: &NodeCtx,
        activation: Activation,
        keep_num_dims: bool,
        consts: &[Option<&Tensor>],
        num: Numerics,
        isa: Isa,
    ) -> Option<Self> {
        if std::mem::size_of::<T>() != 1 {
            return None;
        }
        let (w, b) = const_weights(ctx, consts)?;
        if w.shape.len() != 2 || w.shape[1] == 0 {
            return None;
        }
        let (nout, k) = (w.shape[0], w.shape[1]);
        if nout == 0 {
            return None;
        }
        let xq = per_tensor(ctx, ctx.in_quant(0), "input").ok()?;
        let yq = per_tensor(ctx, ctx.out_quant(0), "output").ok()?;
        let (wscales, wzps) = per_channel(ctx, ctx.in_quant(1), nout, "weights").ok()?;
        let wo = weights_i16(ctx, w, &wzps).ok()?;
        let bias = bias_i32(ctx, b, nout).ok()?;
        let stage = OutputStage::new(
            xq.scale,
            &wscales,
            yq,
            activation_range::<T>(activation, yq),
        )
        .with_rounding(match num {
            Numerics::LiteRt => Rounding::TiesUp,
            Numerics::Reference => Rounding::Single,
            Numerics::Tflm => Rounding::TiesAway,
        });
        #[cfg(target_arch = "x86_64")]
        let igemm2 = isa
            .is_avx2_only()
            .then(|| Some((PackedPairs::new(&wo, nout, k, &bias)?, Wide8::new(&stage)?)))
            .flatten();
        Some(FcKernel {
            keep_num_dims,
            isa,
            xq,
            igemm: igemm_parts::<T>(isa, &wo, nout, k, &bias, xq.zp, &stage),
            #[cfg(target_arch = "x86_64")]
            maddubs: igemm2.as_ref().and_then(|_| {
                let zu = u8::try_from(xq.zp - T::MIN).ok()?;
                MaddubsW::new(&wo, nout, k, &bias, zu)
            }),
            #[cfg(target_arch = "x86_64")]
            igemm2,
            #[cfg(target_arch = "x86_64")]
            ind: None,
            packed8: packed8::<T>(isa, &wo, nout, k, &bias, xq.zp),
            packed: PackedW::new(&wo, nout, k, &bias),
            requant: Requant::new(&stage),
            a: Vec::new(),
            au: Vec::new(),
            acc: Vec::new(),
            shape: Vec::new(),
            _t: PhantomData,
        })
    }
}

impl<T: QInt> Prepared for FcKernel<T> {
    fn run(
        &mut self,
        ctx: &NodeCtx,
        inputs: &[Option<&Tensor>],
        out: &mut Option<Tensor>,
    ) -> Result<()> {
        let x = crate::kernels::quantized::common::input(ctx, inputs, 0)?;
        let (nout, k) = (self.packed.n, self.packed.k);
        if x.len() % k != 0 {
            return Err(ctx.error(format!(
                "input {:?} does not split into rows of {k}",
                x.shape
            )));
        }
        let xs = T::slice(x)
            .ok_or_else(|| ctx.error(format!("input must be {}, got {}", T::DTYPE, x.dtype())))?;
        let rows = x.len() / k;
        let isa = self.isa;
        // Reused between runs: a steady-state run allocates nothing.
        let mut shape = std::mem::take(&mut self.shape);
        shape.clear();
        if self.keep_num_dims && !x.shape.is_empty() {
            shape.extend_from_slice(&x.shape[..x.shape.len() - 1]);
            shape.push(nout);
        } else {
            shape.extend([rows, nout]);
        }
        let r = self.run_rows(isa, xs, rows, &shape, out);
        self.shape = shape;
        r
    }
}

impl<T: QInt> FcKernel<T> {
    fn run_rows(
        &mut self,
        isa: Isa,
        xs: &[T],
        rows: usize,
        shape: &[usize],
        out: &mut Option<Tensor>,
    ) -> Result<()> {
        let (nout, k) = (self.packed.n, self.packed.k);
        #[cfg(target_arch = "x86_64")]
        if let Some((p8, wide)) = &self.igemm {
            let lda = p8.k_pad();
            if let Some(ind) = strided_rows(&mut self.ind, rows, lda) {
                padded_rows(xs, k, lda, p8.zu, &mut self.au, |s, d| to_u8(isa, s, d));
                let y = out_buffer::<T>(out, shape, rows * nout);
                igemm(isa, &self.au, ind, p8, wide, bytes_mut(y), nout);
                return Ok(());
            }
        }
        #[cfg(target_arch = "x86_64")]
        if let (Some((_, w8)), Some(mw)) = (&self.igemm2, &mut self.maddubs) {
            // Few rows only: the i16 GEMM's 4-row tiles read the weights once per 4 rows,
            // this kernel once per row.
            if rows <= 3 {
                padded_rows(xs, k, mw.k_pad(), mw.zu, &mut self.au, |s, d| {
                    to_u8(isa, s, d)
                });
                let y = out_buffer::<T>(out, shape, rows * nout);
                let signed = T::MIN < 0;
                maddubs::gemv(isa, &self.au, rows, mw, w8, signed, bytes_mut(y));
                return Ok(());
            }
        }
        #[cfg(target_arch = "x86_64")]
        if let Some((pp, w8)) = &self.igemm2 {
            let lda = pp.k_pad();
            if let Some(ind) = strided_rows(&mut self.ind, rows, lda) {
                let zp = self.xq.zp;
                padded_rows(xs, k, lda, 0, &mut self.a, |s, d| offset(isa, s, zp, d));
                let y = out_buffer::<T>(out, shape, rows * nout);
                avx2::igemm(isa, &self.a, ind, pp, w8, T::MIN < 0, bytes_mut(y), nout);
                return Ok(());
            }
        }
        let ldc = self.packed.n_pad();
        self.acc.resize(rows * ldc, 0);
        if let Some(p8) = &self.packed8 {
            let lda = p8.k_pad();
            padded_rows(xs, k, lda, p8.zu, &mut self.au, |s, d| to_u8(isa, s, d));
            gemm_u8(isa, &self.au, lda, rows, p8, &mut self.acc, ldc);
        } else {
            let lda = self.packed.k_pad();
            let zp = self.xq.zp;
            padded_rows(xs, k, lda, 0, &mut self.a, |s, d| offset(isa, s, zp, d));
            gemm(isa, &self.a, lda, rows, &self.packed, &mut self.acc, ldc);
        }
        let y = out_buffer::<T>(out, shape, rows * nout);
        for (row, yr) in self
            .acc
            .chunks_exact(ldc)
            .zip(y.chunks_exact_mut(nout.max(1)))
        {
            self.requant.row(isa, row, yr);
        }
        Ok(())
    }
}
