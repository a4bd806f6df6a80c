/* binfmt_misc interpreter for aarch64 binaries: runs qemu-aarch64-static with a fixed CPU model.
 *
 * Why: qemu-user's default CPU ("max") advertises SVE/SME, and ai-edge-litert then picks kernels
 * that run ~10x slower under emulation; a Pi 4 is a Cortex-A72. The QEMU_CPU environment variable
 * does not reach systemd services or ssh sessions in the guest, an argument on every exec does.
 *
 * Registered with flags POCF, so the kernel calls:  wrapper <full path> <argv0> <argv1> ...
 * (P: argv0 preserved, O/C: binary opened by the kernel and setuid credentials honoured so sudo
 * works, F: this wrapper opened once at registration, so it works inside the container). It execs
 *   QEMU -cpu CPU -0 <argv0> <full path> <argv1> ...
 * QEMU must exist at the same path inside the guest root (the rootfs carries a copy).
 * Build: cc -static -Os -DCPU='"cortex-a72"' -DQEMU='"/usr/bin/qemu-aarch64-static"' */
#include <stdio.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <unistd.h>

#ifndef CPU
#define CPU "cortex-a72"
#endif
#ifndef QEMU
#define QEMU "/usr/bin/qemu-aarch64-static"
#endif

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "qemu-cpu-wrapper: expected <path> <argv0> [args...] from binfmt_misc (flag P)\n");
        return 127;
    }
    /* flag O hands us the binary as an open fd too; qemu reopens it by path, so don't leak it */
    unsigned long exec_fd = getauxval(AT_EXECFD);
    if (exec_fd > 2) close((int)exec_fd);

    char **args = calloc((size_t)argc + 6, sizeof *args);
    if (!args) return 127;
    int n = 0;
    args[n++] = QEMU;
    args[n++] = "-cpu";
    args[n++] = CPU;
    args[n++] = "-0";
    args[n++] = argv[2];
    args[n++] = argv[1];
    for (int i = 3; i < argc; i++) args[n++] = argv[i];
    args[n] = NULL;
    execv(QEMU, args);
    perror("qemu-cpu-wrapper: exec " QEMU);
    return 127;
}
