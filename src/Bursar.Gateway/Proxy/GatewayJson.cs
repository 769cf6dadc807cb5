using System.Buffers;
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

    /// <summary>
    /// The changed body that goes upstream, written into one buffer sized from the caller's body: the same bytes as
    /// <see cref="JsonSerializer.SerializeToUtf8Bytes{TValue}(TValue, System.Text.Json.Serialization.Metadata.JsonTypeInfo{TValue})"/>
    /// without its buffer doubling through the shared array pool (up to 8 MiB kept there for a 5 MB body) and its final copy.
    /// </summary>
    public static ReadOnlyMemory<byte> Serialize(JsonObject node, int callerBytes)
    {
        var buffer = new ArrayBufferWriter<byte>(callerBytes + callerBytes / 16 + 256);
        using (var writer = new Utf8JsonWriter(buffer)) JsonSerializer.Serialize(writer, node, GatewayJson.Default.JsonObject);
        return buffer.WrittenMemory;
    }
}
