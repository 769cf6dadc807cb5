using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Bursar.Gateway.Proxy;

[JsonSerializable(typeof(JsonObject))]
internal sealed partial class GatewayJson : JsonSerializerContext;
