import Foundation
import CBLAS

/// Matrix products through OpenBLAS. Row-major throughout.
public enum BLAS {
    /// `C[m, n] = A[m, k] · B[k, n] (+ C when accumulate)`; B is `[k, n]` row-major, or `[n, k]`
    /// when `transposeB`. One row of A is a matrix–vector product (faster in BLAS for m = 1).
    package static func matmul(
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>,
        m: Int, k: Int, n: Int, transposeB: Bool = false, accumulate: Bool = false
    ) {
        let beta: Float = accumulate ? 1 : 0
        if m == 1 {
            if transposeB {
                // B is [n, k]: c = B · a.
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(k), 1, b, Int32(k), a, 1, beta, c, 1)
            } else {
                // B is [k, n]: c = Bᵀ · a.
                cblas_sgemv(CblasRowMajor, CblasTrans, Int32(k), Int32(n), 1, b, Int32(n), a, 1, beta, c, 1)
            }
            return
        }
        cblas_sgemm(
            CblasRowMajor, CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a,
            Int32(k), b, Int32(transposeB ? k : n), beta, c, Int32(n))
    }

    /// Sets OpenBLAS's thread count once for the process (no oversubscription with our own
    /// scheduler threads). Defaults to the number of online cores.
    public static func configureThreads(_ count: Int? = nil) {
        let cores = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        openblas_set_num_threads(Int32(count ?? cores))
    }

    /// The OpenBLAS kernel in use (e.g. `Haswell`, `SkylakeX`), for benchmark reports.
    package static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }
}

