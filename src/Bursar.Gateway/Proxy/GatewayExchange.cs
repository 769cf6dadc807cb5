using Bursar.Providers.Dialects;
using Microsoft.AspNetCore.Http;

namespace Bursar.Gateway.Proxy;

/// <summary>The gateway's side of one call (<see cref="Bursar.Core.Pipeline.LeverCall.Host"/>): the HTTP exchange, the caller's wire format and the caller's bytes.</summary>
public sealed class GatewayExchange(HttpContext http, Dialect dialect, ReadOnlyMemory<byte> body)
{
    public HttpContext Http { get; } = http;
    public Dialect Dialect { get; } = dialect;
    /// <summary>The caller's body as received: sent upstream untouched unless a stage, a translation or metering changes it.</summary>
    public ReadOnlyMemory<byte> Body { get; } = body;
    /// <summary>The caller asked for the usage chunk of an OpenAI stream.</summary>
    public bool IncludeUsage { get; init; }
    /// <summary>The API the caller spoke: chat (Chat Completions or Messages), Responses or embeddings.</summary>
    public Bursar.Core.Pipeline.WireApi Api { get; init; }
    /// <summary>Responses: the stored response this call continues, when this gateway served it.</summary>
    public ResponseChains.Entry? Previous { get; init; }
    /// <summary>Responses: the caller's <c>previous_response_id</c>, served here or not.</summary>
    public string? PreviousResponseId { get; init; }
    /// <summary>Responses: the answer is stored upstream (<c>store</c> not false), so a later call may continue it.</summary>
    public bool Stored { get; init; } = true;
    /// <summary>Responses served by a Claude model: this call's input items, its output items and the Responses object the caller got.</summary>
    public System.Text.Json.Nodes.JsonArray? TranslatedInput { get; set; }
    public System.Text.Json.Nodes.JsonArray? TranslatedOutput { get; set; }
    public byte[]? TranslatedResponse { get; set; }
}
