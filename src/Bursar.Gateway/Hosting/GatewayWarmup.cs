using System.Diagnostics;
using System.Text;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Core.Tokens;
using Bursar.Providers.Dialects;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Hosting;

/// <summary>
/// What the first call would otherwise pay for, done at start before <c>/health/ready</c> says ready: the o200k
/// tokenizer's vocabulary (gpt-4o and newer, and Claude's estimate; loaded on first use), the one-pass request scan of both dialects, the ledger record's
/// JSON and the key store's first query (its SQLite connection and statements), each run once so the JIT has compiled
/// them. Nothing is sent to a provider and nothing is written to the ledger. Until it ends the readiness check answers
/// "warming up" (a load balancer keeps traffic away), the liveness check is unaffected. The cl100k vocabulary of the
/// older OpenAI models (gpt-4, gpt-3.5) is not warmed: 2.6 MB of heap and ~35 ms to load (<see cref="BpeEncoding"/>),
/// paid only by a gateway that serves them, on its first call of such a model.
/// </summary>
internal sealed partial class GatewayWarmup(TokenCounter tokens, IKeyStore keys, TimeProvider time, ILogger<GatewayWarmup> logger) : IHostedService, IHealthCheck
{
    private static readonly byte[] OpenAiSample = Encoding.UTF8.GetBytes("""{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You answer briefly."},{"role":"user","content":"Warm-up: what is the capital of France?"}],"max_tokens":16,"stream":true,"stream_options":{"include_usage":true}}""");
    private static readonly byte[] AnthropicSample = Encoding.UTF8.GetBytes("""{"model":"claude-haiku-4-5","max_tokens":16,"system":"You answer briefly.","messages":[{"role":"user","content":"Warm-up: what is the capital of France?"}]}""");

    private Task? _warm;
    private TimeSpan? _took;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _warm = Task.Run(WarmAsync, CancellationToken.None);
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private async Task WarmAsync()
    {
        var started = time.GetTimestamp();
        try
        {
            tokens.Count("gpt-4o-mini", "Warm-up: what is the capital of France?");
            tokens.Count("claude-haiku-4-5", "Warm-up: what is the capital of France?");
            RequestScan.Run(OpenAiSample, Dialect.OpenAI);
            RequestScan.Run(AnthropicSample, Dialect.Anthropic);
            var record = new LedgerRecord { Id = CallIds.New(time.GetUtcNow()), Timestamp = time.GetUtcNow(), Dialect = "openai", Provider = "warm-up", RequestedModel = "gpt-4o-mini", Outcome = "ok" };
            System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(record, LedgerJsonContext.Default.LedgerRecord);
            await keys.FindByHashAsync(VirtualKey.HashSecret(VirtualKey.NewSecret()), CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // a warm-up that fails costs the first call its time, nothing else: the call path reports its own errors
            LogWarmupFailed(logger, e.Message);
        }
        _took = time.GetElapsedTime(started);
        LogWarm(logger, _took.Value.TotalMilliseconds);
    }

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(_warm is { IsCompleted: true } && _took is { } took
            ? HealthCheckResult.Healthy($"warm ({took.TotalMilliseconds:F0} ms: tokenizers, request scan, ledger JSON, key store)")
            : HealthCheckResult.Unhealthy("warming up: loading the tokenizers and compiling the request path before the first call"));

    [LoggerMessage(Level = LogLevel.Debug, Message = "Warm-up done in {Milliseconds:F0} ms (tokenizers, request scan, ledger JSON, key store).")]
    private static partial void LogWarm(ILogger logger, double milliseconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Warm-up failed ({Reason}); the first calls will be slower.")]
    private static partial void LogWarmupFailed(ILogger logger, string reason);
}
