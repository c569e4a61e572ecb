/*
 * 2-D pLSTM forward on the CPU: the recurrence cell by cell, with the edge states kept in cache.
 *
 * Part of recvision (Apache-2.0). Written from the equations of Pöppel et al., "pLSTM: parallelizable Linear
 * Source Transition Mark networks" (arXiv 2506.11997), as stated in ../README.md and in naive.py, the readable
 * reference this kernel is tested against. Compiled on first use by recvision/ops/utils/native.py and called
 * through ctypes; forward only (training uses the chunked PyTorch form).
 *
 * Per head and orientation, with every gate taken at (x, y) and R[-1, y] = D[x, -1] = 0:
 *
 *     R[x, y] = trans_rl R[x-1, y] + trans_ru D[x, y-1] + source_r k v^T
 *     D[x, y] = trans_du D[x, y-1] + trans_dl R[x-1, y] + source_d k v^T
 *     o[x, y] = scale q^T (mark_l R[x-1, y] + mark_u D[x, y-1]) + direct scale (q . k) v
 *
 * Row-major order (x outer, y inner) visits (x-1, y) and (x, y-1) before (x, y), so one task needs only the Y
 * right-going states of the previous row and a single down-going state: Y + 1 states of [DK, BV] (a block of BV
 * value columns; the columns of a state never mix). A task is one (orientation, batch, head, value block) and writes
 * only its own slice of `out`, which has one output per orientation (the caller sums them), so tasks never share
 * memory they write and the result does not depend on the number of threads. Orientation bit 0 flips X, bit 1 flips
 * Y (recvision.ops.plstm2d.orient): a flipped axis is walked backwards over the unflipped tensors, and no flipped
 * copy is made.
 *
 * Layouts (contiguous): q, k [B, X, Y, H, DK]; v [B, X, Y, H, DV]; gates [9, O, B, X, Y, H] in the order
 * source_r, source_d, trans_rl, trans_ru, trans_du, trans_dl, mark_l, mark_u, direct (GATE_NAMES); orient [O];
 * out [O, B, X, Y, H, DV], every element written.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* value columns per task: the inner loops run over one block, a few vector registers wide */
#define BV 32
#define MAX_THREADS 256

/* one build serves every x86-64 CPU: GCC compiles the task loop for AVX-512, AVX2 and baseline x86-64 and picks
   the version at load time (an ifunc: glibc only). The x86-64-v4 / v3 names need GCC 12; older GCCs get the
   equivalent CPU names. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
#if __GNUC__ >= 12
#define TARGET_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif __GNUC__ >= 6
#define TARGET_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#else
#define TARGET_CLONES
#endif
#else
#define TARGET_CLONES
#endif

#define DEFINE_KERNEL(T, SUFFIX)                                                                                 \
    typedef struct {                                                                                             \
        const T *q, *k, *v, *gates;                                                                              \
        T *out;                                                                                                  \
        const int32_t *orient;                                                                                   \
        int64_t O, B, X, Y, H, DK, DV, ntasks;                                                                   \
        T scale;                                                                                                 \
        int nthreads, tid;                                                                                       \
    } args_##SUFFIX;                                                                                             \
                                                                                                                 \
    TARGET_CLONES void plstm2d_task_##SUFFIX(const args_##SUFFIX *a, int64_t task, T *R, T *D) {                  \
        const int64_t X = a->X, Y = a->Y, H = a->H, DK = a->DK, DV = a->DV;                                      \
        const int64_t nvb = (DV + BV - 1) / BV;                                                                  \
        const int64_t vb = task % nvb, h = (task / nvb) % H, b = (task / (nvb * H)) % a->B;                      \
        const int64_t oi = task / (nvb * H * a->B);                                                              \
        const int64_t j0 = vb * BV, bv = DV - j0 < BV ? DV - j0 : BV;                                            \
        const int64_t cells = a->B * X * Y * H, gs = a->O * cells; /* gs: stride between gate kinds */          \
        T vbuf[BV], acc[BV];                                                                                     \
        {                                                                                                        \
            const int fx = a->orient[oi] & 1, fy = (a->orient[oi] >> 1) & 1;                                     \
            const T *g = a->gates + oi * cells;                                                                  \
            T *out = a->out + oi * cells * DV;                                                                   \
            memset(R, 0, sizeof(T) * (size_t)(Y * DK * BV));                                                     \
            for (int64_t xs = 0; xs < X; ++xs) {                                                                 \
                const int64_t x = fx ? X - 1 - xs : xs;                                                          \
                memset(D, 0, sizeof(T) * (size_t)(DK * BV));                                                     \
                for (int64_t ys = 0; ys < Y; ++ys) {                                                             \
                    const int64_t y = fy ? Y - 1 - ys : ys;                                                      \
                    const int64_t c = ((b * X + x) * Y + y) * H + h;                                             \
                    const T *qc = a->q + c * DK, *kc = a->k + c * DK, *vc = a->v + c * DV + j0;                  \
                    const T sr = g[c], sd = g[c + gs], trl = g[c + 2 * gs], tru = g[c + 3 * gs];                 \
                    const T tdu = g[c + 4 * gs], tdl = g[c + 5 * gs], ml = g[c + 6 * gs], mu = g[c + 7 * gs];    \
                    const T direct = g[c + 8 * gs];                                                              \
                    for (int j = 0; j < BV; ++j) {                                                               \
                        vbuf[j] = j < bv ? vc[j] : (T)0;                                                         \
                        acc[j] = 0;                                                                              \
                    }                                                                                            \
                    T *restrict Ry = R + ys * DK * BV;                                                           \
                    T qk = 0;                                                                                    \
                    for (int64_t i = 0; i < DK; ++i) {                                                           \
                        const T qi = qc[i] * a->scale, ki = kc[i];                                               \
                        const T qml = qi * ml, qmu = qi * mu, cr = sr * ki, cd = sd * ki;                        \
                        T *restrict Ri = Ry + i * BV;                                                            \
                        T *restrict Di = D + i * BV;                                                             \
                        qk += qi * ki;                                                                           \
                        for (int j = 0; j < BV; ++j) {                                                           \
                            const T r = Ri[j], d = Di[j];                                                        \
                            acc[j] += qml * r + qmu * d;                                                         \
                            Ri[j] = trl * r + tru * d + cr * vbuf[j];                                            \
                            Di[j] = tdu * d + tdl * r + cd * vbuf[j];                                            \
                        }                                                                                        \
                    }                                                                                            \
                    T *oc = out + c * DV + j0;                                                                   \
                    for (int64_t j = 0; j < bv; ++j) oc[j] = acc[j] + direct * qk * vbuf[j];                     \
                }                                                                                                \
            }                                                                                                    \
        }                                                                                                        \
    }                                                                                                            \
                                                                                                                 \
    static void *plstm2d_worker_##SUFFIX(void *p) {                                                              \
        const args_##SUFFIX *a = (const args_##SUFFIX *)p;                                                       \
        T *R = (T *)malloc(sizeof(T) * (size_t)((a->Y + 1) * a->DK * BV));                                       \
        if (R == NULL) return (void *)1;                                                                         \
        for (int64_t t = a->tid; t < a->ntasks; t += a->nthreads)                                                \
            plstm2d_task_##SUFFIX(a, t, R, R + a->Y * a->DK * BV);                                               \
        free(R);                                                                                                 \
        return NULL;                                                                                             \
    }                                                                                                            \
                                                                                                                 \
    /* returns 0 on success, 1 if a work buffer could not be allocated (the output is then incomplete) */      \
    int plstm2d_fused_recurrent_##SUFFIX(const T *q, const T *k, const T *v, const T *gates, T *out,            \
                                         const int32_t *orient, int64_t O, int64_t B, int64_t X, int64_t Y,     \
                                         int64_t H, int64_t DK, int64_t DV, double scale, int nthreads) {       \
        const int64_t ntasks = O * B * H * ((DV + BV - 1) / BV);                                                 \
        if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;                                                      \
        if (nthreads > ntasks) nthreads = (int)ntasks;                                                           \
        if (nthreads < 1) nthreads = 1;                                                                          \
        args_##SUFFIX args[MAX_THREADS];                                                                         \
        pthread_t threads[MAX_THREADS];                                                                          \
        for (int t = 0; t < nthreads; ++t) {                                                                     \
            const args_##SUFFIX s = {q, k, v, gates, out, orient, O, B, X, Y, H, DK, DV, ntasks, (T)scale,       \
                                     nthreads, t};                                                               \
            args[t] = s;                                                                                         \
        }                                                                                                        \
        int started = 1, status = 0;                                                                             \
        for (; started < nthreads; ++started)                                                                    \
            if (pthread_create(&threads[started], NULL, plstm2d_worker_##SUFFIX, &args[started]) != 0) break;   \
        /* the calling thread runs slot 0, and the slots of any thread that could not be started */              \
        for (int t = started; t < nthreads; ++t)                                                                 \
            if (plstm2d_worker_##SUFFIX(&args[t]) != NULL) status = 1;                                           \
        if (plstm2d_worker_##SUFFIX(&args[0]) != NULL) status = 1;                                               \
        for (int t = 1; t < started; ++t) {                                                                      \
            void *r = NULL;                                                                                      \
            pthread_join(threads[t], &r);                                                                        \
            if (r != NULL) status = 1;                                                                           \
        }                                                                                                        \
        return status;                                                                                           \
    }

DEFINE_KERNEL(float, f32)
DEFINE_KERNEL(double, f64)
