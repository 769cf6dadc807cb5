using Bursar.Core.Caching.Semantic;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Bursar.Gateway.Hosting;

/// <summary>
/// The semantic cache's encoder on <c>/health/ready</c>: off (no feature opts in), loading, loaded (name, weights, memory the load
/// added, load time, entries and bytes held, batches run), the built-in fallback (why), or failed (why: the semantic cache is off).
/// Never unhealthy: a model that did not load turns the semantic cache off, not the gateway; loading and failed are Degraded (200).
/// </summary>
internal sealed class SemanticEncoderHealthCheck(SemanticResponseCache cache) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        if (!cache.EncoderLoaded)
        {
            return Task.FromResult(cache.Options.Features.Count == 0
                ? HealthCheckResult.Healthy("semantic cache off: no feature opts in (the encoder loads on first use)", new Dictionary<string, object> { ["state"] = "off" })
                : HealthCheckResult.Degraded("semantic cache encoder loading", data: new Dictionary<string, object> { ["state"] = "loading", ["generator"] = cache.Options.Generator }));
        }
        var e = cache.Encoder;
        var data = new Dictionary<string, object>
        {
            ["encoder"] = e.Name,
            ["generator"] = cache.Options.Generator,
        };
        if (!e.Enabled)
        {
            data["state"] = "failed";
            data["reason"] = e.DisabledReason!;
            return Task.FromResult(HealthCheckResult.Degraded($"semantic cache disabled: its encoder {e.Name} could not be loaded ({e.DisabledReason}); every call is served without it", data: data));
        }
        data["state"] = e.FallbackReason is null ? "loaded" : "fallback";
        if (e.FallbackReason is { } why) data["reason"] = why;
        data["threshold"] = cache.Threshold;
        data["model_bytes"] = e.ModelBytes;
        data["load_memory_bytes"] = e.LoadMemoryBytes;
        data["load_ms"] = Math.Round(e.LoadTime.TotalMilliseconds, 1);
        data["entries"] = cache.Count;
        data["cache_bytes"] = cache.Bytes;
        if (e.Generator is BatchingEmbeddingGenerator b)
        {
            data["embedding_batches"] = b.Batches;
            data["embedded_texts"] = b.Texts;
        }
        return Task.FromResult(HealthCheckResult.Healthy(e.FallbackReason is null ? $"semantic cache encoder {e.Name} loaded" : $"semantic cache on the built-in {e.Name} generator ({e.FallbackReason})", data));
    }
}
