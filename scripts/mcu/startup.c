/*
 * Bare-metal start-up for the qemu mps2 boards (mps2-an386: Cortex-M4, mps2-an500:
 * Cortex-M7) used by edgeopt's C-generation harness: vector table, .data/.bss set-up,
 * FPU enable, SysTick as a free-running instruction clock, and minimal Arm semihosting
 * calls (file I/O, console, exit) so no newlib syscalls are needed.
 */
#include <stddef.h>
#include <stdint.h>

#include "semihost.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);

/* ---- semihosting (Arm "Semihosting for AArch32 and AArch64", BKPT 0xAB on M-profile) ---- */
static int32_t sh_call(int32_t op, void *arg) {
    register int32_t r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static size_t sh_strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

int32_t sh_open(const char *path, int32_t mode) {
    uint32_t args[3];
    args[0] = (uint32_t)path;
    args[1] = (uint32_t)mode;
    args[2] = (uint32_t)sh_strlen(path);
    return sh_call(0x01, args);
}

int32_t sh_close(int32_t fd) {
    uint32_t args[1];
    args[0] = (uint32_t)fd;
    return sh_call(0x02, args);
}

/* Returns the number of bytes read. */
int32_t sh_read(int32_t fd, void *buf, uint32_t len) {
    uint32_t args[3];
    args[0] = (uint32_t)fd;
    args[1] = (uint32_t)buf;
    args[2] = len;
    return (int32_t)len - sh_call(0x06, args);
}

/* Returns the number of bytes written. */
int32_t sh_write(int32_t fd, const void *buf, uint32_t len) {
    uint32_t args[3];
    args[0] = (uint32_t)fd;
    args[1] = (uint32_t)buf;
    args[2] = len;
    return (int32_t)len - sh_call(0x05, args);
}

void sh_puts(const char *s) { sh_call(0x04, (void *)s); }

void sh_exit(int32_t code) {
    /* SYS_EXIT_EXTENDED: reason ADP_Stopped_ApplicationExit with an exit code. */
    uint32_t args[2];
    args[0] = 0x20026;
    args[1] = (uint32_t)code;
    sh_call(0x20, args);
    for (;;) {
    }
}

/* ---- SysTick: counts processor clock ticks; extended to 64 bits by the interrupt ---- */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)
static volatile uint32_t systick_wraps;

void SysTick_Handler(void) { systick_wraps++; }

void clock_start(void) {
    SYST_RVR = 0xFFFFFF;
    SYST_CVR = 0;
    systick_wraps = 0;
    SYST_CSR = 7; /* enable, interrupt, processor clock */
    /* The current value reads 0 until the first reload: wait for it. */
    while (SYST_CVR == 0) {
    }
    systick_wraps = 0;
}

uint64_t clock_ticks(void) {
    uint32_t hi, lo;
    do {
        hi = systick_wraps;
        lo = SYST_CVR;
    } while (hi != systick_wraps);
    return (uint64_t)hi * 0x1000000u + (0xFFFFFFu - lo);
}

/* Exactly 2 * n instructions (subs + bne per iteration), to calibrate the clock. */
void spin(uint32_t n) {
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
}

static void fault(void) {
    sh_puts("edgeopt harness: hard fault\n");
    sh_exit(3);
}

void Reset_Handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
#if defined(__ARM_FP)
    /* CP10/CP11 full access: the hard-float ABI uses the FPU. */
    *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb");
#endif
    sh_exit(main());
}

typedef void (*vector)(void);
__attribute__((section(".vectors"), used)) static const vector vectors[16] = {
    (vector)(uintptr_t)&_estack, Reset_Handler, fault, fault, fault, fault, fault, 0, 0, 0, 0,
    fault, fault, 0, fault, SysTick_Handler,
};
