using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Bursar.Gateway.Proxy;

[JsonSerializable(typeof(JsonObject))]
internal sealed partial class GatewayJson : JsonSerializerContext;

/// <summary>How the gateway reads a caller's body into a DOM: a key twice anywhere is an error (not a later exception), depth as the scan allows.</summary>
internal static class CallerJson
{
    public static readonly JsonDocumentOptions Options = new() { AllowDuplicateProperties = false, MaxDepth = 128 };

    /// <summary>Parses a body <see cref="RequestScan"/> accepted; throws <see cref="JsonException"/> for a duplicate key, naming it.</summary>
    public static JsonObject Parse(ReadOnlySpan<byte> body) => (JsonObject)JsonNode.Parse(body, documentOptions: Options)!;
}
