using System.Globalization;
using Bursar.Core.Caching;
using Bursar.Core.Pipeline;
using Bursar.Providers.Dialects;
using Microsoft.AspNetCore.Http;

namespace Bursar.Gateway.Proxy;

/// <summary>Writes a call's answer to the caller in one piece; the call's ledger record is journaled first (<see cref="LeverCall.SealAsync"/>).</summary>
public static class CallerAnswer
{
    /// <summary>The error in the caller's dialect, its ledger fields set from it.</summary>
    public static Task RefuseAsync(HttpContext ctx, LeverCall call, Dialect dialect, ProviderError error, string? outcome = null)
    {
        call.Outcome = outcome ?? (error.Source switch { ErrorSource.Upstream => "upstream_error", ErrorSource.Policy => "refused", _ => "client_error" });
        call.StatusCode = error.Status;
        call.ErrorType = dialect == Dialect.Anthropic ? error.AnthropicType : error.Code ?? error.OpenAIType;
        call.ErrorMessage = error.Message;
        return WriteErrorAsync(ctx, call, dialect, error);
    }

    public static Task WriteErrorAsync(HttpContext ctx, LeverCall call, Dialect dialect, ProviderError error)
    {
        if (error.RetryAfterSeconds is { } ra) ctx.Response.Headers.RetryAfter = ra.ToString(CultureInfo.InvariantCulture);
        return WriteJsonAsync(ctx, call, error.Status, error.ToJson(dialect));
    }

    /// <summary>Writes an error outside a metered call (no ledger record): count_tokens, unknown endpoints.</summary>
    public static Task WriteErrorAsync(HttpContext ctx, Dialect dialect, ProviderError error)
    {
        if (error.RetryAfterSeconds is { } ra) ctx.Response.Headers.RetryAfter = ra.ToString(CultureInfo.InvariantCulture);
        return WriteBodyAsync(ctx, error.Status, error.ToJson(dialect));
    }

    /// <summary>The call's answer in one piece: its ledger record is journaled first, then the caller gets every byte.</summary>
    public static async Task WriteJsonAsync(HttpContext ctx, LeverCall call, int status, byte[] bytes)
    {
        await call.SealAsync().ConfigureAwait(false);
        await WriteBodyAsync(ctx, status, bytes).ConfigureAwait(false);
    }

    /// <summary>A cache's answer: the stored bytes, its age and (semantic) similarity in headers.</summary>
    public static async Task ServeHitAsync(HttpContext ctx, LeverCall call, CachedResponse hit, TimeProvider time)
    {
        ctx.Response.Headers["x-bursar-cache"] = call.CacheStatus;
        if (call.SemanticHit) ctx.Response.Headers["x-bursar-cache-similarity"] = call.Similarity.ToString("0.0000", CultureInfo.InvariantCulture);
        ctx.Response.Headers["x-bursar-cache-age"] = ((long)(time.GetUtcNow() - hit.StoredAt).TotalSeconds).ToString(CultureInfo.InvariantCulture);
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = hit.ContentType;
        if (hit.ContentType == "text/event-stream") ctx.Response.Headers.CacheControl = "no-cache";
        ctx.Response.ContentLength = hit.Body.Length;
        await call.SealAsync().ConfigureAwait(false);
        await ctx.Response.Body.WriteAsync(hit.Body, ctx.RequestAborted).ConfigureAwait(false);
        await ctx.Response.CompleteAsync().ConfigureAwait(false);
    }

    private static async Task WriteBodyAsync(HttpContext ctx, int status, byte[] bytes)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        ctx.Response.ContentLength = bytes.Length;
        await ctx.Response.Body.WriteAsync(bytes, ctx.RequestAborted).ConfigureAwait(false);
        await ctx.Response.CompleteAsync().ConfigureAwait(false);
    }
}
