/// ModelGate's version, as `modelgate --version` prints it and `/healthz` reports it.
public enum ModelGateVersion {
    public static let current = "0.20.0"
}
