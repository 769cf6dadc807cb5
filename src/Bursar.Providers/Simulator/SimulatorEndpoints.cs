using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Bursar.Providers.Simulator;

/// <summary>Hosts the Simulator on ASP.NET Core (the <c>bursar simulate-provider</c> server).</summary>
public static class SimulatorEndpoints
{
    public static IEndpointConventionBuilder MapProviderSimulator(this IEndpointRouteBuilder app, ProviderSimulator simulator) =>
        app.Map("/v1/{**rest}", (HttpContext ctx) => ServeAsync(ctx, simulator));

    /// <summary>Answers <paramref name="ctx"/> as the provider its path names (<c>/v1/...</c>) would.</summary>
    public static async Task ServeAsync(HttpContext ctx, ProviderSimulator simulator)
    {
        ContextExchange x;
        if (ProviderSimulator.StreamsRequestBody(ctx.Request.Method, ctx.Request.Path.Value ?? "/"))
        {
            x = new ContextExchange(ctx, [], ctx.Request.Body); // an upload: read as it arrives, never held whole
        }
        else
        {
            using var ms = new MemoryStream();
            await ctx.Request.Body.CopyToAsync(ms, ctx.RequestAborted).ConfigureAwait(false);
            x = new ContextExchange(ctx, ms.ToArray(), null);
        }
        try
        {
            await simulator.HandleAsync(x, ctx.RequestAborted).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
        {
        }
    }

    private sealed class ContextExchange : SimulatorExchange
    {
        private readonly HttpContext _ctx;

        [System.Diagnostics.CodeAnalysis.SetsRequiredMembers]
        public ContextExchange(HttpContext ctx, byte[] body, Stream? bodyStream)
        {
            _ctx = ctx;
            Method = ctx.Request.Method;
            Path = ctx.Request.Path.Value ?? "/";
            Query = ctx.Request.QueryString.Value?.TrimStart('?') ?? "";
            Body = body;
            BodyStream = bodyStream;
        }

        public override string? Header(string name) => _ctx.Request.Headers.TryGetValue(name, out var v) ? v.ToString() : null;

        public override void SetStatus(int status) => _ctx.Response.StatusCode = status;

        public override void SetHeader(string name, string value) => _ctx.Response.Headers[name] = value;

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            await _ctx.Response.Body.WriteAsync(data, cancellationToken).ConfigureAwait(false);
            await _ctx.Response.Body.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
    }
}
