/// The OpenAPI 3.1 document of every route (`openapi.json` beside this file, embedded at build).
/// A test checks that every registered route is documented.
public enum OpenAPIDocument {
    public static let json = String(decoding: PackageResources.openapi_json, as: UTF8.self)
}
