/*
 * edgeopt C-generation harness: runs a generated model (model.h / model.c) on every
 * sample of an input file and writes the outputs, for comparison with edgeopt's
 * runtime. The same file builds
 *  - on the host (EO_HOST): `harness INPUTS OUTPUTS`, stdio;
 *  - for qemu mps2 (Cortex-M4/M7): semihosting I/O on `inputs.bin` / `outputs.bin` in
 *    qemu's working directory, and instruction counts per inference: under
 *    `-icount shift=0` every instruction advances virtual time by 1 ns, and SysTick
 *    (processor clock) counts virtual time, so ticks * (instructions per tick) is the
 *    instruction count. The ratio is calibrated with a loop of known length.
 * Input file: samples back to back (EDGEOPT_INPUT0_BYTES each). Output file: for each
 * sample, every output back to back.
 */
#include <stddef.h>
#include <stdint.h>

#include "model.h"

#ifdef EO_HOST
#include <stdio.h>
#else
#include "semihost.h"
#endif

/* Samples are read straight into the model's input (which lives in its arena): a
 * staging buffer would cost the board EDGEOPT_INPUT0_BYTES of RAM the model itself does
 * not need (110,592 B for a 96x96x3 float input: MobileNetV2 then no longer linked in
 * the Cortex-M4's 256 KB). */

/* Output sizes, from model.h's EDGEOPT_OUTPUT<k>_BYTES (up to 8 outputs; a model with
 * more stops the build here rather than writing nothing for the rest). */
#if EDGEOPT_NUM_OUTPUTS > 8
#error "the harness writes at most 8 outputs"
#endif
static const uint32_t out_bytes[EDGEOPT_NUM_OUTPUTS] = {
    EDGEOPT_OUTPUT0_BYTES,
#if EDGEOPT_NUM_OUTPUTS > 1
    EDGEOPT_OUTPUT1_BYTES,
#endif
#if EDGEOPT_NUM_OUTPUTS > 2
    EDGEOPT_OUTPUT2_BYTES,
#endif
#if EDGEOPT_NUM_OUTPUTS > 3
    EDGEOPT_OUTPUT3_BYTES,
#endif
#if EDGEOPT_NUM_OUTPUTS > 4
    EDGEOPT_OUTPUT4_BYTES,
#endif
#if EDGEOPT_NUM_OUTPUTS > 5
    EDGEOPT_OUTPUT5_BYTES,
#endif
#if EDGEOPT_NUM_OUTPUTS > 6
    EDGEOPT_OUTPUT6_BYTES,
#endif
#if EDGEOPT_NUM_OUTPUTS > 7
    EDGEOPT_OUTPUT7_BYTES,
#endif
};

#ifndef EO_HOST
static void put_u64(const char *label, uint64_t v) {
    char buf[64];
    char digits[24];
    int n = 0, i = 0;
    size_t k = 0;
    while (label[k]) {
        buf[i++] = label[k++];
    }
    do {
        digits[n++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    while (n) buf[i++] = digits[--n];
    buf[i++] = '\n';
    buf[i] = 0;
    sh_puts(buf);
}
#endif

#if defined(EDGEOPT_PROFILE) && !defined(EO_HOST)
/* Per-layer ticks, summed over the samples (model.c calls this after each layer). */
static uint64_t layer_ticks[EDGEOPT_NUM_LAYERS];
static uint64_t layer_t0;
void edgeopt_layer_done(int layer) {
    const uint64_t t = clock_ticks();
    if (layer >= 0 && layer < EDGEOPT_NUM_LAYERS) layer_ticks[layer] += t - layer_t0;
    layer_t0 = clock_ticks();
}
#elif defined(EDGEOPT_PROFILE)
void edgeopt_layer_done(int layer) { (void)layer; }
#endif

#ifdef EO_HOST
int main(int argc, char **argv) {
    FILE *fi, *fo;
    int o;
    long samples = 0;
    if (argc != 3) {
        fprintf(stderr, "usage: %s INPUTS OUTPUTS\n", argv[0]);
        return 2;
    }
    fi = fopen(argv[1], "rb");
    fo = fopen(argv[2], "wb");
    if (!fi || !fo) {
        fprintf(stderr, "cannot open files\n");
        return 2;
    }
    edgeopt_model_init();
    while (fread(edgeopt_model_input(0), 1, EDGEOPT_INPUT0_BYTES, fi) == EDGEOPT_INPUT0_BYTES) {
        edgeopt_model_invoke();
        for (o = 0; o < EDGEOPT_NUM_OUTPUTS; o++) {
            if (fwrite(edgeopt_model_output(o), 1, out_bytes[o], fo) != out_bytes[o]) return 2;
        }
        samples++;
    }
    fclose(fi);
    if (fclose(fo) != 0) return 2;
    printf("samples %ld\n", samples);
    return 0;
}
#else
int main(void) {
    int32_t fi, fo;
    int o;
    uint64_t samples = 0, t0, t1, calib_ticks, total = 0, min = (uint64_t)-1, max = 0;
    const uint32_t calib_loops = 2000000; /* 4,000,000 instructions */
    fi = sh_open("inputs.bin", 1);
    fo = sh_open("outputs.bin", 5);
    if (fi < 0 || fo < 0) {
        sh_puts("edgeopt harness: cannot open inputs.bin / outputs.bin\n");
        return 2;
    }
    clock_start();
    t0 = clock_ticks();
    spin(calib_loops);
    t1 = clock_ticks();
    calib_ticks = t1 - t0;
    put_u64("calib_instructions ", 2ull * calib_loops);
    put_u64("calib_ticks ", calib_ticks);
    edgeopt_model_init();
    while (sh_read(fi, edgeopt_model_input(0), EDGEOPT_INPUT0_BYTES) ==
           (int32_t)EDGEOPT_INPUT0_BYTES) {
        uint64_t d;
        t0 = clock_ticks();
#ifdef EDGEOPT_PROFILE
        layer_t0 = t0;
#endif
        edgeopt_model_invoke();
        t1 = clock_ticks();
        d = t1 - t0;
        total += d;
        if (d < min) min = d;
        if (d > max) max = d;
        for (o = 0; o < EDGEOPT_NUM_OUTPUTS; o++) {
            if (sh_write(fo, edgeopt_model_output(o), out_bytes[o]) != (int32_t)out_bytes[o]) {
                sh_puts("edgeopt harness: write failed\n");
                return 2;
            }
        }
        samples++;
    }
    sh_close(fi);
    sh_close(fo);
    put_u64("samples ", samples);
    put_u64("invoke_ticks_total ", total);
    put_u64("invoke_ticks_min ", min);
    put_u64("invoke_ticks_max ", max);
#ifdef EDGEOPT_PROFILE
    for (o = 0; o < EDGEOPT_NUM_LAYERS; o++) put_u64("layer_ticks ", layer_ticks[o]);
#endif
    return 0;
}
#endif
