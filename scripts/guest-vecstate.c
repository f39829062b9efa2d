/* Does the guest kernel keep a process's AVX/AVX-512 registers across
 * context switches and signal handlers? (docs/nested-host.md, "Guest
 * processes' vector registers").
 *
 *   vecstate info                 what user space sees: CPUID bits, XCR0
 *   vecstate ymm|zmm TAG SECONDS  keep a pattern made from TAG in ymm15
 *                                 (zmm: zmm31 and k7) and check it in a
 *                                 loop; run two with different tags at once
 *   vecstate sig TAG SECONDS      the same with a 3 ms SIGALRM whose handler
 *                                 clobbers those registers
 *   vecstate forksig TAG SECONDS  sig in a parent and a forked child
 *
 * Exit status 1 when a register lost its value. The host needs AVX-512 for
 * zmm, sig and forksig. To run it in a guest, append it to the initramfs:
 *
 *   gcc -O2 -static -o /tmp/vs/bin/vecstate scripts/guest-vecstate.c
 *   (cd /tmp/vs && find bin | cpio -o -H newc) > /tmp/vs.cpio
 *   cat ~/.cache/memtide/initramfs.cpio /tmp/vs.cpio > /tmp/initramfs-vs.cpio
 *   memtide run --initramfs /tmp/initramfs-vs.cpio \
 *       --cmd 'vecstate info; vecstate zmm 1 6 & vecstate zmm 2 6; wait; vecstate forksig 3 6'
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cpuid.h>
#include <signal.h>
#include <sys/time.h>
#include <sys/wait.h>

static volatile long sigs;
/* A signal handler that clobbers the registers the main loop checks. */
static void on_alarm(int s) {
    (void)s;
    sigs++;
    __asm__ volatile("vpternlogd $0xff, %%zmm31, %%zmm31, %%zmm31\n"
                     "kxnorq %%k7, %%k7, %%k7\n"
                     "vpcmpeqd %%ymm15, %%ymm15, %%ymm15\n" ::: "memory");
}

static uint64_t pat[8] __attribute__((aligned(64)));

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Loads ymm15 from pat and spins `iters` times comparing it; returns the
 * number of loop iterations left when a mismatch was seen (0: none). */
static long spin_ymm(long iters) {
    long left = iters;
    __asm__ volatile(
        "vmovdqu (%1), %%ymm15\n"
        "1:\n"
        "vpcmpeqq (%1), %%ymm15, %%ymm14\n"
        "vpmovmskb %%ymm14, %%eax\n"
        "cmp $-1, %%eax\n"
        "jne 2f\n"
        "dec %0\n"
        "jnz 1b\n"
        "2:\n"
        : "+r"(left)
        : "r"(pat)
        : "rax", "xmm14", "xmm15", "cc", "memory");
    return left;
}

static long spin_zmm(long iters) {
    long left = iters;
    __asm__ volatile(
        "vmovdqu64 (%1), %%zmm31\n"
        "kmovq (%1), %%k7\n"
        "1:\n"
        "vpcmpeqq (%1), %%zmm31, %%k1\n"
        "kmovb %%k1, %%eax\n"
        "cmp $0xff, %%eax\n"
        "jne 2f\n"
        "kmovq %%k7, %%rax\n"
        "cmp (%1), %%rax\n"
        "jne 2f\n"
        "dec %0\n"
        "jnz 1b\n"
        "2:\n"
        : "+r"(left)
        : "r"(pat)
        : "rax", "cc", "memory");
    return left;
}

int main(int argc, char **argv) {
    unsigned a, b, c, d;
    __cpuid(1, a, b, c, d);
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1;
    uint64_t xcr0 = 0;
    if (osxsave) {
        uint32_t lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = ((uint64_t)hi << 32) | lo;
    }
    if (argc < 2 || strcmp(argv[1], "info") == 0) {
        printf("vecstate: user CPUID osxsave=%d avx=%d avx2=%d avx512f=%d xcr0=%#llx\n",
               osxsave, avx, avx2, avx512f, (unsigned long long)xcr0);
        return 0;
    }
    if (argc < 4) {
        fprintf(stderr, "usage: vecstate info | ymm|zmm|sig|forksig TAG SECONDS\n");
        return 2;
    }
    long tag = strtol(argv[2], 0, 0);
    double secs = strtod(argv[3], 0);
    for (int i = 0; i < 8; i++)
        pat[i] = 0x1111111111111111ull * (uint64_t)tag + i;
    int use_zmm = strcmp(argv[1], "zmm") == 0;
    int use_sig = strcmp(argv[1], "sig") == 0 || strcmp(argv[1], "forksig") == 0;
    pid_t child = -1;
    if (strcmp(argv[1], "forksig") == 0) {
        child = fork();
        if (child == 0)
            for (int i = 0; i < 8; i++) pat[i] ^= 0xffff;
    }
    if (use_sig) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm;
        sa.sa_flags = SA_RESTART;
        sigaction(SIGALRM, &sa, 0);
        struct itimerval it = {{0, 3000}, {0, 3000}};
        setitimer(ITIMER_REAL, &it, 0);
    }
    double end = now() + secs;
    long rounds = 0, bad = 0;
    while (now() < end) {
        long left = (use_zmm || (use_sig && (rounds & 1))) ? spin_zmm(2000000) : spin_ymm(2000000);
        rounds++;
        if (left) {
            bad++;
            if (bad <= 3)
                printf("vecstate %s tag %ld: register lost its value (round %ld)\n",
                       argv[1], tag, rounds);
        }
    }
    if (use_sig) {
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &off, 0);
    }
    printf("vecstate %s tag %ld%s: %ld of %ld rounds saw a foreign value (%ld signals)\n", argv[1], tag,
           child == 0 ? " (child)" : "", bad, rounds, sigs);
    if (child > 0) {
        int st;
        waitpid(child, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st)) bad++;
    }
    return bad ? 1 : 0;
}
