import COpenSSL

/// AES-256-GCM authenticated encryption through libcrypto.
///
/// `seal` draws a fresh random 96-bit nonce per call and returns `nonce || ciphertext || tag`;
/// `open` verifies the 128-bit tag over the ciphertext and the associated data before
/// returning anything. Callers never handle nonces.
package enum AES256GCM {
    package static let keyByteCount = 32
    package static let nonceByteCount = 12
    package static let tagByteCount = 16
    /// Bytes `seal` adds to the plaintext.
    package static let overhead = nonceByteCount + tagByteCount

    package static func seal(_ plaintext: [UInt8], key: [UInt8], associatedData: [UInt8] = []) throws -> [UInt8] {
        try seal(plaintext, key: key, nonce: try SecureRandom.bytes(nonceByteCount), associatedData: associatedData)
    }

    /// Seals with `header` placed before the nonce in the output (one allocation, no copy).
    static func seal(_ plaintext: [UInt8], key: [UInt8], associatedData: [UInt8], header: [UInt8]) throws -> [UInt8] {
        try seal(plaintext, key: key, nonce: try SecureRandom.bytes(nonceByteCount), associatedData: associatedData, header: header)
    }

    /// Sealing with a caller-chosen nonce exists for known-answer tests only: a repeated nonce
    /// under one key destroys GCM's security.
    static func seal(_ plaintext: [UInt8], key: [UInt8], nonce: [UInt8], associatedData: [UInt8], header: [UInt8] = []) throws -> [UInt8] {
        guard key.count == keyByteCount else { throw CryptoError.invalidKey("AES-256 needs a 32-byte key") }
        guard nonce.count == nonceByteCount else { throw CryptoError.invalidKey("GCM nonce must be 12 bytes") }
        guard let context = EVP_CIPHER_CTX_new() else { throw CryptoError.libraryFailure("EVP_CIPHER_CTX_new") }
        defer { EVP_CIPHER_CTX_free(context) }

        let start = header.count
        var output = [UInt8](repeating: 0, count: start + nonceByteCount + plaintext.count + tagByteCount)
        output.replaceSubrange(0..<start, with: header)
        output.replaceSubrange(start..<start + nonceByteCount, with: nonce)
        var length: Int32 = 0
        try check(EVP_EncryptInit_ex(context, EVP_aes_256_gcm(), nil, nil, nil), "EncryptInit")
        try check(EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_GCM_SET_IVLEN, Int32(nonceByteCount), nil), "SET_IVLEN")
        try key.withUnsafeBufferPointer { keyBuffer in
            try nonce.withUnsafeBufferPointer { nonceBuffer in
                try check(EVP_EncryptInit_ex(context, nil, nil, keyBuffer.baseAddress, nonceBuffer.baseAddress), "EncryptInit key")
            }
        }
        if !associatedData.isEmpty {
            try associatedData.withUnsafeBufferPointer { aad in
                try check(EVP_EncryptUpdate(context, nil, &length, aad.baseAddress, Int32(aad.count)), "AAD")
            }
        }
        try output.withUnsafeMutableBufferPointer { out in
            guard let base = out.baseAddress.map({ $0 + start }) else { return }
            if !plaintext.isEmpty {
                try plaintext.withUnsafeBufferPointer { input in
                    try check(EVP_EncryptUpdate(context, base + nonceByteCount, &length, input.baseAddress, Int32(input.count)), "EncryptUpdate")
                }
            }
            try check(EVP_EncryptFinal_ex(context, base + nonceByteCount + plaintext.count, &length), "EncryptFinal")
            try check(EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_GCM_GET_TAG, Int32(tagByteCount), base + nonceByteCount + plaintext.count), "GET_TAG")
        }
        return output
    }

    package static func open(_ sealed: [UInt8], key: [UInt8], associatedData: [UInt8] = []) throws -> [UInt8] {
        try open(sealed, from: 0, key: key, associatedData: associatedData)
    }

    /// Opens the sealed bytes that start at `offset` (after a caller's header).
    static func open(_ sealed: [UInt8], from offset: Int, key: [UInt8], associatedData: [UInt8]) throws -> [UInt8] {
        guard key.count == keyByteCount else { throw CryptoError.invalidKey("AES-256 needs a 32-byte key") }
        guard offset >= 0, sealed.count - offset >= overhead else { throw CryptoError.malformedCiphertext("shorter than nonce and tag") }
        guard let context = EVP_CIPHER_CTX_new() else { throw CryptoError.libraryFailure("EVP_CIPHER_CTX_new") }
        defer { EVP_CIPHER_CTX_free(context) }

        let ciphertextCount = sealed.count - offset - overhead
        var plaintext = [UInt8](repeating: 0, count: ciphertextCount)
        var length: Int32 = 0
        try check(EVP_DecryptInit_ex(context, EVP_aes_256_gcm(), nil, nil, nil), "DecryptInit")
        try check(EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_GCM_SET_IVLEN, Int32(nonceByteCount), nil), "SET_IVLEN")
        let authentic: Bool = try sealed.withUnsafeBufferPointer { input in
            guard let base = input.baseAddress.map({ $0 + offset }) else { return false }
            try key.withUnsafeBufferPointer { keyBuffer in
                try check(EVP_DecryptInit_ex(context, nil, nil, keyBuffer.baseAddress, base), "DecryptInit key")
            }
            if !associatedData.isEmpty {
                try associatedData.withUnsafeBufferPointer { aad in
                    try check(EVP_DecryptUpdate(context, nil, &length, aad.baseAddress, Int32(aad.count)), "AAD")
                }
            }
            return try plaintext.withUnsafeMutableBufferPointer { out in
                if ciphertextCount > 0 {
                    try check(EVP_DecryptUpdate(context, out.baseAddress, &length, base + nonceByteCount, Int32(ciphertextCount)), "DecryptUpdate")
                }
                let tag = UnsafeMutableRawPointer(mutating: base + nonceByteCount + ciphertextCount)
                try check(EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_GCM_SET_TAG, Int32(tagByteCount), tag), "SET_TAG")
                var finalLength: Int32 = 0
                var scratch = [UInt8](repeating: 0, count: 16)
                return scratch.withUnsafeMutableBufferPointer { EVP_DecryptFinal_ex(context, $0.baseAddress, &finalLength) } > 0
            }
        }
        guard authentic else {
            // Never hand back unauthenticated bytes.
            for index in plaintext.indices { plaintext[index] = 0 }
            throw CryptoError.authenticationFailed
        }
        return plaintext
    }

    private static func check(_ status: Int32, _ step: String) throws {
        guard status == 1 else { throw CryptoError.libraryFailure("AES-256-GCM \(step)") }
    }
}
