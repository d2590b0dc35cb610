import Testing
@testable import Encryption

@Suite struct AES256GCMTests {
    let key = (0..<32).map { UInt8($0) }

    @Test func sealThenOpenReturnsThePlaintext() throws {
        for length in [0, 1, 15, 16, 17, 1024, 70_000] {
            let plaintext = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let sealed = try AES256GCM.seal(plaintext, key: key, associatedData: Array("row:1".utf8))
            #expect(sealed.count == plaintext.count + AES256GCM.overhead)
            #expect(try AES256GCM.open(sealed, key: key, associatedData: Array("row:1".utf8)) == plaintext)
        }
    }

    @Test func matchesPublishedTestVectors() throws {
        // McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 14 and 16.
        let zero = try AES256GCM.seal([UInt8](repeating: 0, count: 16), key: [UInt8](repeating: 0, count: 32),
                                      nonce: [UInt8](repeating: 0, count: 12), associatedData: [])
        #expect(Array(zero.dropFirst(12)).hexString == "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919")

        let key16 = try #require([UInt8](hexString: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"))
        let nonce16 = try #require([UInt8](hexString: "cafebabefacedbaddecaf888"))
        let plaintext16 = try #require([UInt8](hexString: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"))
        let aad16 = try #require([UInt8](hexString: "feedfacedeadbeeffeedfacedeadbeefabaddad2"))
        let sealed16 = try AES256GCM.seal(plaintext16, key: key16, nonce: nonce16, associatedData: aad16)
        #expect(Array(sealed16.dropFirst(12)).hexString
            == "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
            + "76fc6ece0f4e1768cddf8853bb2d551b")
        #expect(try AES256GCM.open(sealed16, key: key16, associatedData: aad16) == plaintext16)
    }

    @Test func tamperingWithAnyByteFails() throws {
        let plaintext = Array("tenant contact: ada@example.com".utf8)
        let aad = Array("tenants/contact_email/1".utf8)
        let sealed = try AES256GCM.seal(plaintext, key: key, associatedData: aad)
        // Every byte: nonce, ciphertext and tag.
        for index in sealed.indices {
            var altered = sealed
            altered[index] ^= 0x01
            #expect(throws: CryptoError.authenticationFailed) {
                try AES256GCM.open(altered, key: key, associatedData: aad)
            }
        }
        #expect(throws: CryptoError.authenticationFailed) {
            try AES256GCM.open(sealed, key: key, associatedData: Array("tenants/contact_email/2".utf8))
        }
        #expect(throws: CryptoError.authenticationFailed) {
            try AES256GCM.open(sealed, key: key, associatedData: [])
        }
        var otherKey = key
        otherKey[0] ^= 0x80
        #expect(throws: CryptoError.authenticationFailed) {
            try AES256GCM.open(sealed, key: otherKey, associatedData: aad)
        }
        #expect(throws: CryptoError.self) { try AES256GCM.open(Array(sealed.prefix(27)), key: key) }
        #expect(throws: CryptoError.self) { try AES256GCM.seal(plaintext, key: Array(key.prefix(16))) }
    }

    @Test func noncesNeverRepeatAcross100kSeals() throws {
        var seen = Set<[UInt8]>()
        seen.reserveCapacity(100_000)
        for _ in 0..<100_000 {
            let sealed = try AES256GCM.seal([1, 2, 3], key: key)
            seen.insert(Array(sealed.prefix(AES256GCM.nonceByteCount)))
        }
        #expect(seen.count == 100_000)
    }
}

@Suite struct DigestTests {
    @Test func sha256MatchesFIPS180Vectors() {
        #expect(SHA256.hash("").hexString == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hash("abc").hexString == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").hexString
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    @Test(arguments: [
        // RFC 4231 test cases 1, 2, 3, 4, 6, 7 (case 5 is a truncated MAC).
        ("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "4869205468657265",
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        ("4a656665", "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        (String(repeating: "aa", count: 20), String(repeating: "dd", count: 50),
         "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
        ("0102030405060708090a0b0c0d0e0f10111213141516171819", String(repeating: "cd", count: 50),
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
        (String(repeating: "aa", count: 131),
         Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8).hexString,
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
        (String(repeating: "aa", count: 131),
         Array("This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".utf8).hexString,
         "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
    ])
    func hmacMatchesRFC4231(key: String, data: String, expected: String) throws {
        let keyBytes = try #require([UInt8](hexString: key))
        let dataBytes = try #require([UInt8](hexString: data))
        let mac = HMACSHA256.authenticate(dataBytes, key: keyBytes)
        #expect(mac.hexString == expected)
        #expect(HMACSHA256.verify(mac, for: dataBytes, key: keyBytes))
        var wrong = mac
        wrong[31] ^= 1
        #expect(!HMACSHA256.verify(wrong, for: dataBytes, key: keyBytes))
    }

    @Test func constantTimeEquality() {
        #expect(ConstantTime.equals([1, 2, 3], [1, 2, 3]))
        #expect(!ConstantTime.equals([1, 2, 3], [1, 2, 4]))
        #expect(!ConstantTime.equals([1, 2, 3], [1, 2]))
        #expect(ConstantTime.equals([], []))
    }

    @Test func randomBytesDiffer() throws {
        let first = try SecureRandom.bytes(32)
        let second = try SecureRandom.bytes(32)
        #expect(first.count == 32)
        #expect(first != second)
        for _ in 0..<1000 { #expect(try SecureRandom.uniform(62) < 62) }
    }
}
