using System.Net;
using System.Text;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Core.Tokens;
using Bursar.Providers.Dialects;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Hosting;

/// <summary>
/// What the first calls would otherwise pay for, done at start before <c>/health/ready</c> says ready. First the pieces:
/// the o200k tokenizer's vocabulary (gpt-4o and newer, and Claude's estimate), the request scan of both dialects, the
/// ledger record's JSON and the key store's first query. Then, once the server listens, the request path itself: the
/// gateway sends itself warm-up calls over loopback (OpenAI and Anthropic, JSON and SSE, through Kestrel, the proxy,
/// the upstream relay and the metering) until the JIT has compiled them to their optimised tier, so that work is not
/// done on the two cores while the first callers wait (bench/RESULTS.md, the cold start). Those calls are rehearsals
/// (<see cref="RehearsalGate"/>): answered by a Simulator of their own, seen by no lever, budget or metric, and never
/// written to the ledger; nothing goes to a provider.
/// <para>
/// <c>Bursar:Server:WarmUpTime</c> (default 10 s; ~8 s on a 2-core machine) bounds the calls' part: it ends sooner when the
/// JIT has compiled almost nothing for a second, or when a caller's call arrives (callers compile the path themselves,
/// and the warm-up does not compete with them for the cores); 0 leaves only the pieces. Until the warm-up ends the
/// readiness check answers "warming up" (a load balancer keeps traffic away); liveness is unaffected, and calls that
/// arrive meanwhile are served.
/// The cl100k vocabulary of the older OpenAI models (gpt-4, gpt-3.5) is not warmed: 2.6 MB of heap and ~35 ms to load
/// (<see cref="BpeEncoding"/>), paid only by a gateway that serves them, on its first call of such a model.
/// </para>
/// </summary>
internal sealed partial class GatewayWarmup : IHostedService, IHealthCheck
{
    public const string TimeSetting = "Bursar:Server:WarmUpTime";

    /// <summary>The fewest calls of each kind before the JIT's quiet counts: more than the 30 calls that send a method to its next tier.</summary>
    internal const int MinCallsPerKind = 64;
    /// <summary>
    /// How long the JIT must have compiled fewer than <see cref="QuietMethods"/> methods (while calls go on) for the path to
    /// count as compiled: the timers and background work of a running gateway compile a trickle of their own.
    /// </summary>
    internal static readonly TimeSpan Quiet = TimeSpan.FromSeconds(1);
    internal const int QuietMethods = 16;
    /// <summary>The same window counted in calls: ends the warm-up under a clock that does not move (a test's fake time).</summary>
    internal const int QuietCalls = 4_000;

    private const string Question = "Warm-up: what is the capital of France?";

    private static byte[] OpenAi(string stream) => Encoding.UTF8.GetBytes($$"""{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You answer briefly."},{"role":"user","content":"{{Question}}"}],"max_tokens":16{{stream}}}""");

    private static byte[] Anthropic(string stream) => Encoding.UTF8.GetBytes($$"""{"model":"claude-haiku-4-5","max_tokens":16{{stream}},"system":"You answer briefly.","messages":[{"role":"user","content":"{{Question}}"}]}""");

    private static readonly byte[] OpenAiSample = OpenAi(""","stream":true,"stream_options":{"include_usage":true}""");
    private static readonly byte[] AnthropicSample = Anthropic("");

    /// <summary>The calls of the rehearsal, in turn: both dialects, JSON and SSE.</summary>
    private static readonly (string Path, byte[] Body)[] Kinds =
    [
        ("v1/chat/completions", OpenAi("")),
        ("v1/chat/completions", OpenAiSample),
        ("v1/messages", AnthropicSample),
        ("v1/messages", Anthropic(""","stream":true""")),
    ];

    private readonly TokenCounter _tokens;
    private readonly IKeyStore _keys;
    private readonly RehearsalGate _gate;
    private readonly Bursar.Providers.Upstream.UpstreamRegistry _registry;
    private readonly IServiceProvider _services;
    private readonly IHostApplicationLifetime _lifetime;
    private readonly TimeProvider _time;
    private readonly ILogger<GatewayWarmup> _logger;
    private readonly TimeSpan _callTime;

    private Task? _warm;
    private TimeSpan? _took;
    private string _what = "";

    public GatewayWarmup(TokenCounter tokens, IKeyStore keys, RehearsalGate gate, Bursar.Providers.Upstream.UpstreamRegistry registry, IServiceProvider services, IHostApplicationLifetime lifetime,
        IConfiguration configuration, TimeProvider time, ILogger<GatewayWarmup> logger)
    {
        (_tokens, _keys, _gate, _registry, _services, _lifetime, _time, _logger) = (tokens, keys, gate, registry, services, lifetime, time, logger);
        _callTime = configuration.GetValue(TimeSetting, TimeSpan.FromSeconds(10)); // not a time span: the binder's error names the setting
        if (_callTime < TimeSpan.Zero)
            throw new InvalidOperationException($"{TimeSetting} must be a time span of 0 or more (e.g. 00:00:10; 0 warms only the tokenizers, scan, JSON and key store), not '{configuration[TimeSetting]}'.");
    }

    /// <summary>The warm-up calls made (for the health check and the tests).</summary>
    internal int Calls { get; private set; }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _warm = Task.Run(WarmAsync, CancellationToken.None);
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private async Task WarmAsync()
    {
        var started = _time.GetTimestamp();
        try
        {
            _tokens.Count("gpt-4o-mini", "Warm-up: what is the capital of France?");
            _tokens.Count("claude-haiku-4-5", "Warm-up: what is the capital of France?");
            RequestScan.Run(OpenAiSample, Dialect.OpenAI);
            RequestScan.Run(AnthropicSample, Dialect.Anthropic);
            var record = new LedgerRecord { Id = CallIds.New(_time.GetUtcNow()), Timestamp = _time.GetUtcNow(), Dialect = "openai", Provider = "warm-up", RequestedModel = "gpt-4o-mini", Outcome = "ok" };
            System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(record, LedgerJsonContext.Default.LedgerRecord);
            await _keys.FindByHashAsync(VirtualKey.HashSecret(VirtualKey.NewSecret()), CancellationToken.None).ConfigureAwait(false);
            _what = "tokenizers, request scan, ledger JSON, key store";
            if (_callTime > TimeSpan.Zero) await RehearseAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // a warm-up that fails costs the first calls their time, nothing else: the call path reports its own errors
            LogWarmupFailed(_logger, e.Message);
        }
        finally
        {
            _registry.CloseRehearsals();
            _gate.Close();
        }
        _took = _time.GetElapsedTime(started);
        LogWarm(_logger, _took.Value.TotalMilliseconds, _what);
    }

    /// <summary>Calls the gateway's own endpoints until the JIT is quiet or the warm-up's time is up.</summary>
    private async Task RehearseAsync()
    {
        if (!await StartedAsync().ConfigureAwait(false)) return;
        if (Loopback(_services.GetService<IServer>()?.Features.Get<IServerAddressesFeature>()?.Addresses) is not { } baseUri)
        {
            LogNoAddress(_logger);
            return;
        }
        var token = _gate.Token!;
        // the rehearsals' upstream is this gateway's own warm-up Simulator, over loopback like a provider
        var upstream = new Uri(baseUri, RehearsalGate.UpstreamPath.TrimStart('/') + "/");
        _registry.OpenRehearsals(new Uri(upstream, "v1/"), upstream, new Dictionary<string, string> { [RehearsalGate.Header] = token });
        using var client = new HttpMessageInvoker(new SocketsHttpHandler
        {
            UseProxy = false, UseCookies = false, AutomaticDecompression = DecompressionMethods.None, ConnectTimeout = TimeSpan.FromSeconds(5),
        });
        var stopping = _lifetime.ApplicationStopping;
        var started = _time.GetTimestamp();
        // the current window: when it started, at which call, with how many methods compiled
        long windowCount = System.Runtime.JitInfo.GetCompiledMethodCount(), windowStart = started;
        int calls = 0, windowCalls = 0;
        var buffer = new byte[16 * 1024];
        while (!stopping.IsCancellationRequested && !_gate.CallersArrived)
        {
            foreach (var (path, body) in Kinds)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(baseUri, path)) { Content = new ByteArrayContent(body) };
                request.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
                request.Headers.TryAddWithoutValidation(RehearsalGate.Header, token);
                request.Headers.TryAddWithoutValidation("anthropic-version", "2023-06-01");
                using var response = await client.SendAsync(request, stopping).ConfigureAwait(false);
                await using (var stream = await response.Content.ReadAsStreamAsync(stopping).ConfigureAwait(false))
                    while (await stream.ReadAsync(buffer, stopping).ConfigureAwait(false) > 0) { }
                if (response.StatusCode != HttpStatusCode.OK)
                    throw new InvalidOperationException($"a warm-up call to /{path} answered {(int)response.StatusCode}; the warm-up stopped after {calls} calls");
                calls++;
            }
            Calls = calls;
            var now = _time.GetTimestamp();
            var count = System.Runtime.JitInfo.GetCompiledMethodCount();
            if (_time.GetElapsedTime(windowStart, now) >= Quiet || calls - windowCalls >= QuietCalls)
            {
                if (count - windowCount < QuietMethods && calls >= MinCallsPerKind * Kinds.Length) break;
                (windowCount, windowStart, windowCalls) = (count, now, calls);
            }
            if (_time.GetElapsedTime(started, now) >= _callTime) break;
        }
        _what += $", request path ({calls} calls in {_time.GetElapsedTime(started).TotalMilliseconds:F0} ms{(_gate.CallersArrived ? "; ended early: callers' calls arrived" : "")})";
    }

    /// <summary>Waits for the server to listen; false when the host stops first.</summary>
    private async Task<bool> StartedAsync()
    {
        var ready = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var a = _lifetime.ApplicationStarted.Register(() => ready.TrySetResult(true));
        using var b = _lifetime.ApplicationStopping.Register(() => ready.TrySetResult(false));
        return await ready.Task.ConfigureAwait(false);
    }

    /// <summary>An http address of this server that a client on this machine reaches: a wildcard or localhost becomes loopback; https and pipes are left out.</summary>
    internal static Uri? Loopback(IEnumerable<string>? addresses)
    {
        foreach (var a in addresses ?? [])
        {
            BindingAddress b;
            try { b = BindingAddress.Parse(a); }
            catch (FormatException) { continue; }
            if (b.IsUnixPipe || !b.Scheme.Equals("http", StringComparison.OrdinalIgnoreCase) || b.Port == 0) continue;
            var host = b.Host switch
            {
                "*" or "+" or "0.0.0.0" or "localhost" => "127.0.0.1",
                "[::]" or "::" => "[::1]",
                var h => h,
            };
            return new Uri($"http://{host}:{b.Port}/");
        }
        return null;
    }

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Task.FromResult(_warm is { IsCompleted: true } && _took is { } took
            ? HealthCheckResult.Healthy($"warm ({took.TotalMilliseconds:F0} ms: {_what})")
            : HealthCheckResult.Unhealthy("warming up: loading the tokenizers and compiling the request path before the first call"));

    [LoggerMessage(Level = LogLevel.Information, Message = "Warm-up done in {Milliseconds:F0} ms ({What}).")]
    private static partial void LogWarm(ILogger logger, double milliseconds, string what);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Warm-up failed ({Reason}); the first calls will be slower.")]
    private static partial void LogWarmupFailed(ILogger logger, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Warm-up: the server has no http address this machine can call (https or a pipe only), so the request path is compiled by the first calls instead.")]
    private static partial void LogNoAddress(ILogger logger);
}
