import Testing

@testable import Inference

/// MODELGATE_KERNELS and its aliases, on CPUs with and without each extension.
@Suite struct KernelSelectionTests {
    static let bare = KernelSelection.CPU(avx512f: false, avx512bf16: false, avx512vnni: false)
    static let full = KernelSelection.CPU(avx512f: true, avx512bf16: true, avx512vnni: true)

    @Test func eachFamilyDefaultsToTheFastestVariantTheCPUHas() throws {
        #expect(try KernelSelection.parse([:], cpu: Self.bare) == KernelSelection(f32Wide: false, bf16Native: false, quantized: .avx2, greedyInt8: false))
        #expect(try KernelSelection.parse([:], cpu: Self.full) == KernelSelection(f32Wide: true, bf16Native: true, quantized: .vnni, greedyInt8: true))
    }

    @Test func variantsAreForcedAndTheOldSwitchesAreAliases() throws {
        let forced = try KernelSelection.parse(["MODELGATE_KERNELS": "f32=avx2, bf16=widened,quantized=exact,greedy-head=full"], cpu: Self.full)
        #expect(forced == KernelSelection(f32Wide: false, bf16Native: false, quantized: .exact, greedyInt8: false))
        let aliases = try KernelSelection.parse(["MODELGATE_F32_WIDE": "0", "MODELGATE_BF16_NATIVE": "0", "MODELGATE_GREEDY_HEAD": "full"], cpu: Self.full)
        #expect(aliases == KernelSelection(f32Wide: false, bf16Native: false, quantized: .vnni, greedyInt8: false))
        // The variable is read after the aliases: its pairs win.
        #expect(try KernelSelection.parse(["MODELGATE_F32_WIDE": "0", "MODELGATE_KERNELS": "f32=avx512"], cpu: Self.full).f32Wide)
        #expect(try KernelSelection.parse(["MODELGATE_KERNELS": "quantized=avx2"], cpu: Self.full).quantized == .avx2)
    }

    @Test func aVariantTheCPULacksOrAnUnknownNameIsAnError() {
        for (value, message) in [
            ("f32=avx512", "MODELGATE_KERNELS: f32=avx512 needs AVX-512F, which this CPU lacks"),
            ("bf16=native", "MODELGATE_KERNELS: bf16=native needs AVX512-BF16, which this CPU lacks"),
            ("quantized=vnni", "MODELGATE_KERNELS: quantized=vnni needs AVX512-VNNI, which this CPU lacks"),
            ("greedy-head=int8", "MODELGATE_KERNELS: greedy-head=int8 needs AVX512-VNNI, which this CPU lacks"),
            ("quantized=int4", "MODELGATE_KERNELS: 'quantized=int4' is not one of f32=avx512|avx2, bf16=native|widened, quantized=vnni|avx2|exact, greedy-head=int8|full"),
            ("f32=avx2,,", "MODELGATE_KERNELS: '' is not one of"),
        ] {
            #expect(throws: KernelSelection.Invalid.self, "\(value)") { try KernelSelection.parse(["MODELGATE_KERNELS": value], cpu: Self.bare) }
            do {
                _ = try KernelSelection.parse(["MODELGATE_KERNELS": value], cpu: Self.bare)
            } catch {
                #expect("\(error)".hasPrefix(message), "\(error)")
            }
        }
    }
}
