import Foundation
import Postgres

// Benchmarks that need the project's own code (not timed tests). Run through bench/run.
// Each prints one JSON line per measurement so bench/run can tabulate and compare.

let arguments = CommandLine.arguments.dropFirst()
guard let name = arguments.first else {
    FileHandle.standardError.write(Data("usage: modelgate-bench pool|seal|gpt2 [--seconds N]\n".utf8))
    exit(2)
}
var seconds = 10.0
if let index = arguments.firstIndex(of: "--seconds"), index + 1 < arguments.endIndex, let value = Double(arguments[index + 1]) {
    seconds = value
}

/// The value after `--name`, if given.
func option(_ name: String) -> String? {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.endIndex else { return nil }
    return arguments[index + 1]
}

switch name {
case "pool":
    try await PoolBenchmark(seconds: seconds).run()
case "seal":
    try SealBenchmark(seconds: seconds).run()
case "bandwidth":
    for threads in [1, 2] { print("threads \(threads): \(GPT2Benchmark.measureReadBandwidth(threads: threads) / 1e9) GB/s") }
case "gemv":
    GemvProbe.run()
case "decode":
    try DecodeProbe.run(seconds: seconds)
case "streams":
    try await StreamsProbe.run(seconds: seconds)
case "wide":
    try WideProbe.run()
case "greedy":
    try GreedyProbe.run()
case "gemm":
    GemmProbe.run()
case "batch":
    try BatchProbe.run(seconds: seconds)
case "prefill":
    try PrefillProbe.run(seconds: seconds)
case "attention":
    AttentionProbe.run()
case "sampling":
    SamplingProbe.run()
case "tg128":
    try LlamaBenchShape.run()
case "llama":
    guard let directory = option("--model") else {
        FileHandle.standardError.write(Data("usage: modelgate-bench llama --model DIR [--tokens N] [--sequences N]\n".utf8))
        exit(2)
    }
    try LlamaShapeBenchmark.run(directory: directory, tokens: Int(option("--tokens") ?? "64") ?? 64, sequences: Int(option("--sequences") ?? "16") ?? 16)
case "packed":
    PackedProbe.run()
case "conv":
    ConvolutionProbe.run()
case "convgemm":
    ConvolutionGemmProbe.run()
case "resnet":
    try ResNetBenchmark(
        weights: option("--weights") ?? "", batch: Int(option("--batch") ?? "1") ?? 1, size: Int(option("--size") ?? "224") ?? 224,
        seconds: seconds
    ).run()
case "metering":
    try await MeteringBenchmark(seconds: seconds).run()
case "engine":
    guard let index = arguments.firstIndex(of: "--models"), index + 1 < arguments.endIndex else { exit(2) }
    try await EngineProbe.run(models: arguments[index + 1], seconds: seconds)
case "gpt2":
    try await GPT2Benchmark(seconds: seconds).run()
default:
    FileHandle.standardError.write(Data("unknown benchmark \(name)\n".utf8))
    exit(2)
}
