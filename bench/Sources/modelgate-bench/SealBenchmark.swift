import Encryption
import Foundation
import Synchronization

/// Seal+open of 1 KiB values through the envelope (`TenantCipher`: header, context-bound
/// associated data) vs raw AES-256-GCM on the same bytes with the same key size.
struct SealBenchmark {
    let seconds: Double

    final class NoStore: DataKeyStore {
        func wrappedDataKeys(tenant: UUID) async throws -> [WrappedDataKey] { [] }
    }

    func run() throws {
        let keys = try MasterKeys.generate()
        let ring = KeyRing(masterKeys: keys, store: NoStore()) { keys }
        let (cipher, _) = try ring.newDataKey(tenant: UUID(), version: 1)
        let plaintext = try SecureRandom.bytes(1024)
        let rawKey = try SecureRandom.bytes(32)
        let context = SealContext(table: "payload_logs", column: "request", rowID: UUID().uuidString.lowercased())
        let aad = Array("tenants/contact_email/row".utf8)

        // Alternate the two in short rounds so both see the same machine state.
        var envelope = 0.0
        var raw = 0.0
        var envelopeCount = 0
        var rawCount = 0
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            var start = Date()
            for _ in 0..<2000 {
                let sealed = try cipher.seal(plaintext, context)
                _ = try cipher.open(sealed, context)
            }
            envelope += Date().timeIntervalSince(start)
            envelopeCount += 2000
            start = Date()
            for _ in 0..<2000 {
                let sealed = try AES256GCM.seal(plaintext, key: rawKey, associatedData: aad)
                _ = try AES256GCM.open(sealed, key: rawKey, associatedData: aad)
            }
            raw += Date().timeIntervalSince(start)
            rawCount += 2000
        }
        let envelopeRate = Double(envelopeCount) / envelope
        let rawRate = Double(rawCount) / raw
        printJSON([
            "benchmark": "seal_open_1KiB",
            "envelope_seal_open_per_second": Int(envelopeRate),
            "raw_aes256gcm_seal_open_per_second": Int(rawRate),
            "ratio_envelope_vs_raw": (envelopeRate / rawRate * 100).rounded() / 100,
            "envelope_MiB_per_second": Int(envelopeRate * 1024 / 1_048_576),
            "seconds": seconds,
        ])
    }
}

func printJSON(_ object: [String: Any]) {
    if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
        print(String(decoding: data, as: UTF8.self))
    }
}
