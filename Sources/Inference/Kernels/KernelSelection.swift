import CKernels
import Foundation

/// Which kernel variant each family of products runs, chosen once per process: the fastest this
/// CPU has, unless `MODELGATE_KERNELS` forces others (for benchmarks and bug reports), as
/// comma-separated `family=variant` pairs:
///
/// - `f32=avx512|avx2`: float32 products (and bf16 and quantized ones that run in float32) on
///   the AVX-512 kernel or the AVX2 Swift blocks;
/// - `bf16=native|widened`: bf16 products of 8 rows or more on the CPU's bfloat16 dot products
///   (AVX512-BF16), or widened to float32;
/// - `quantized=vnni|avx2|exact`: quantized products in integers (X rounded to 8 bits per block
///   of 32) on AVX-512 VNNI or AVX2, or `exact`: each weight multiplied out in float32;
/// - `greedy-head=int8|full`: greedy steps through the bounded int8 head (AVX-512 VNNI), or
///   the whole head.
///
/// The older switches stay as aliases: `MODELGATE_F32_WIDE=0` is `f32=avx2`,
/// `MODELGATE_BF16_NATIVE=0` `bf16=widened`, `MODELGATE_GREEDY_HEAD=full` `greedy-head=full`.
/// A variant this CPU lacks, or a name that is not one, is an error (`validate`), not a crash.
package struct KernelSelection: Equatable, Sendable {
    package enum Quantized: String, Sendable { case vnni, avx2, exact }

    package var f32Wide: Bool
    package var bf16Native: Bool
    package var quantized: Quantized
    package var greedyInt8: Bool

    /// What this CPU has: each family's fastest variant.
    package struct CPU: Sendable {
        var avx512f, avx512bf16, avx512vnni: Bool

        package static let current = CPU(avx512f: mg_f32_available() != 0, avx512bf16: mg_bf16_available() != 0, avx512vnni: mg_int8_available() != 0)
    }

    package struct Invalid: Error, CustomStringConvertible {
        package let description: String
    }

    /// Each family's fastest variant on `cpu` (the int8 greedy head needs AVX512-VNNI with BW,
    /// as the integer products' VNNI variant).
    package static func fastest(on cpu: CPU = .current) -> KernelSelection {
        KernelSelection(f32Wide: cpu.avx512f, bf16Native: cpu.avx512bf16, quantized: cpu.avx512vnni ? .vnni : .avx2, greedyInt8: cpu.avx512vnni)
    }

    /// The selection from `environment` on `cpu`.
    package static func parse(_ environment: [String: String], cpu: CPU = .current) throws -> KernelSelection {
        var selection = fastest(on: cpu)
        if environment["MODELGATE_F32_WIDE"] == "0" { selection.f32Wide = false }
        if environment["MODELGATE_BF16_NATIVE"] == "0" { selection.bf16Native = false }
        if environment["MODELGATE_GREEDY_HEAD"] == "full" { selection.greedyInt8 = false }
        guard let list = environment["MODELGATE_KERNELS"], !list.isEmpty else { return selection }
        let families = "f32=avx512|avx2, bf16=native|widened, quantized=vnni|avx2|exact, greedy-head=int8|full"
        for item in list.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            func lacks(_ feature: String) -> Invalid { Invalid(description: "MODELGATE_KERNELS: \(item) needs \(feature), which this CPU lacks") }
            switch (pair.first ?? "", pair.count == 2 ? pair[1] : "") {
            case ("f32", "avx512"):
                guard cpu.avx512f else { throw lacks("AVX-512F") }
                selection.f32Wide = true
            case ("f32", "avx2"): selection.f32Wide = false
            case ("bf16", "native"):
                guard cpu.avx512bf16 else { throw lacks("AVX512-BF16") }
                selection.bf16Native = true
            case ("bf16", "widened"): selection.bf16Native = false
            case ("quantized", "vnni"):
                guard cpu.avx512vnni else { throw lacks("AVX512-VNNI") }
                selection.quantized = .vnni
            case ("quantized", "avx2"): selection.quantized = .avx2
            case ("quantized", "exact"): selection.quantized = .exact
            case ("greedy-head", "int8"):
                guard cpu.avx512vnni else { throw lacks("AVX512-VNNI") }
                selection.greedyInt8 = true
            case ("greedy-head", "full"): selection.greedyInt8 = false
            default: throw Invalid(description: "MODELGATE_KERNELS: '\(item)' is not one of \(families)")
            }
        }
        return selection
    }

    /// This process's selection (the defaults where the variable is invalid: `validate` reports it).
    package static let current = (try? parse(ProcessInfo.processInfo.environment)) ?? fastest()

    /// Throws the one-line error for an invalid `MODELGATE_KERNELS` (commands check it first).
    package static func validate(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        _ = try parse(environment)
    }
}
