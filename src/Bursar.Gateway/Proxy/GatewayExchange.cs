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
}
