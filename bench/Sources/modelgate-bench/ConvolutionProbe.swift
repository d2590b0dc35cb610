import Foundation
import Inference

/// Milliseconds per 3x3 convolution (best of a second's runs) (whatever method it chooses) on the shapes of ResNet-20
/// CIFAR at batch 64 and of ResNet-18 at batch 8, with multiply-add rates: a layer slower than
/// its neighbours of equal arithmetic stands out.
enum ConvolutionProbe {
    static func run() {
        let shapes = [
            (3, 16, 32, 64), (16, 16, 32, 64), (16, 16, 31, 64), (32, 32, 16, 64), (64, 64, 8, 64),
            (64, 64, 56, 8), (128, 128, 28, 8), (256, 256, 14, 8), (512, 512, 7, 8), (512, 512, 7, 1),
        ]
        for (inputChannels, channels, size, n) in shapes {
            let weight = FloatBuffer(count: channels * inputChannels * 9)
            for i in 0..<weight.count { weight[i] = Float(i % 7) * 0.01 - 0.03 }
            let convolution = Convolution(
                weight: weight.pointer, outputChannels: channels, inputChannels: inputChannels, kernel: 3, stride: 1, padding: 1)
            let input = FloatBuffer(count: n * size * size * inputChannels)
            for i in 0..<input.count { input[i] = Float(i % 11) * 0.1 }
            _ = convolution.apply(input, n: n, h: size, w: size, relu: true)
            // The best of many runs: this shared machine's neighbours add noise, never speed.
            var seconds = Double.infinity
            let start = Date()
            while Date().timeIntervalSince(start) < 1 {
                let before = Date()
                _ = convolution.apply(input, n: n, h: size, w: size, relu: true)
                seconds = min(seconds, Date().timeIntervalSince(before))
            }
            let flops = 2.0 * Double(n * size * size * inputChannels * channels * 9)
            print("\(inputChannels)->\(channels) \(size)x\(size) n \(n): \(String(format: "%.3f", seconds * 1000)) ms, \(String(format: "%.0f", flops / seconds / 1e9)) direct-equivalent GFLOP/s")
        }
    }
}
