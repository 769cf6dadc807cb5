using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Ledger;
using Bursar.Gateway.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Tests;

/// <summary>
/// The warm-up's calls through the request path before <c>/health/ready</c> (GatewayWarmup, RehearsalGate): they run,
/// they leave nothing (no ledger row, no metric, no state in the callers' Simulator), nobody else can make one, and the
/// door shuts when the warm-up ends.
/// </summary>
public sealed class WarmupTests
{
    private static Task<(WebApplication App, string Dir, Uri Base)> StartAsync(params string[] extra) => StartAsync(null, extra);

    private static async Task<(WebApplication App, string Dir, Uri Base)> StartAsync(Action<WebApplication>? beforeStart, params string[] extra)
    {
        var dir = Path.Combine(Path.GetTempPath(), "bursar-warm-" + Guid.NewGuid().ToString("N"));
        var app = GatewayHost.Build(["--urls=http://127.0.0.1:0", "--Bursar:DataDirectory=" + dir, .. extra], b => b.Logging.SetMinimumLevel(LogLevel.Warning));
        beforeStart?.Invoke(app);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return (app, dir, new Uri(address));
    }

    private static async Task StopAsync(WebApplication app, string dir)
    {
        await app.DisposeAsync();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(dir, true); } catch (IOException) { }
    }

    private static async Task<JsonNode> ReadyAsync(HttpClient http)
    {
        for (var i = 0; ; i++)
        {
            using var resp = await http.GetAsync("/health/ready");
            var doc = JsonNode.Parse(await resp.Content.ReadAsStringAsync())!;
            if (resp.StatusCode == HttpStatusCode.OK) return doc;
            Assert.True(i < 600, "not ready within 60 s: " + doc.ToJsonString());
            Assert.Contains("warming up", doc["checks"]!["warm_up"]!["description"]!.GetValue<string>());
            await Task.Delay(100);
        }
    }

    private static HttpRequestMessage Chat(string? warmUpToken, bool stream = false) => new(HttpMethod.Post, "/v1/chat/completions")
    {
        Content = new StringContent($$"""{"model":"gpt-4o-mini","stream":{{(stream ? "true" : "false")}},"messages":[{"role":"user","content":"hello"}]}""", Encoding.UTF8, "application/json"),
        Headers = { { RehearsalGate.Header, warmUpToken ?? new string('0', 64) } },
    };

    /// <summary>A call straight to the warm-up's upstream (the Simulator behind <see cref="RehearsalGate.UpstreamPath"/>) with <paramref name="token"/>.</summary>
    private static Task<HttpResponseMessage> WarmUpUpstreamAsync(HttpClient http, string token)
    {
        var req = new HttpRequestMessage(HttpMethod.Post, RehearsalGate.UpstreamPath + "/v1/chat/completions")
        {
            Content = new StringContent("""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""", Encoding.UTF8, "application/json"),
        };
        req.Headers.Add(RehearsalGate.Header, token);
        return http.SendAsync(req);
    }

    [Fact]
    public async Task The_request_path_is_rehearsed_before_ready_and_leaves_no_ledger_row_metric_or_simulator_state()
    {
        // this gateway's own meter (other gateways of the test process count under the same meter name)
        long counted = 0;
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        var (app, dir, baseUri) = await StartAsync(a =>
        {
            var factory = a.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
            listener.InstrumentPublished = (instrument, l) => { if (ReferenceEquals(instrument.Meter.Scope, factory) && instrument.Meter.Name == Bursar.Core.Metering.CallMeter.MeterName) l.EnableMeasurementEvents(instrument); };
            listener.SetMeasurementEventCallback<long>((_, _, _, _) => Interlocked.Increment(ref counted));
            listener.SetMeasurementEventCallback<double>((_, _, _, _) => Interlocked.Increment(ref counted));
            listener.Start();
        }, "--Bursar:Server:WarmUpTime=00:00:03");
        try
        {
            using var http = new HttpClient { BaseAddress = baseUri };
            var warmup = app.Services.GetRequiredService<GatewayWarmup>();
            var doc = await ReadyAsync(http);
            var said = doc["checks"]!["warm_up"]!["description"]!.GetValue<string>();
            Assert.Contains("request path (", said);
            // every kind (OpenAI and Anthropic, JSON and SSE) more often than the JIT's 30 calls to the next tier
            Assert.True(warmup.Calls >= GatewayWarmup.MinCallsPerKind * 4, $"{warmup.Calls} warm-up calls: {said}");
            Assert.DoesNotContain("ended early", said);

            // nothing of it on the ledger, in the metrics, or in the Simulator callers' keyless deployments use
            await app.Services.GetRequiredService<LedgerWriter>().FlushAsync();
            Assert.Equal(0, await app.Services.GetRequiredService<ILedgerStore>().CountAsync(default));
            Assert.Equal(0, Interlocked.Read(ref counted));
            Assert.Equal(0, app.Services.GetRequiredService<Bursar.Providers.Simulator.ProviderSimulator>().RequestCount);
        }
        finally { await StopAsync(app, dir); }
    }

    [Fact]
    public async Task Once_warm_the_header_is_ignored_and_the_warm_up_upstream_answers_404()
    {
        var (app, dir, baseUri) = await StartAsync("--Bursar:Server:WarmUpTime=00:00:01");
        try
        {
            using var http = new HttpClient { BaseAddress = baseUri };
            var gate = app.Services.GetRequiredService<RehearsalGate>();
            var token = gate.Token; // read while the warm-up runs (it is never shown anywhere)
            Assert.NotNull(token);
            await ReadyAsync(http);
            Assert.Null(gate.Token);
            // the token that worked a moment ago is now nothing: the call needs a virtual key
            using var late = await http.SendAsync(Chat(token));
            Assert.Equal(HttpStatusCode.Unauthorized, late.StatusCode);
            Assert.Contains("Missing Bursar virtual key", await late.Content.ReadAsStringAsync());
            using var upstream = await WarmUpUpstreamAsync(http, token!);
            Assert.Equal(HttpStatusCode.NotFound, upstream.StatusCode);
        }
        finally { await StopAsync(app, dir); }
    }

    [Fact]
    public async Task A_forged_token_during_the_warm_up_is_refused_and_a_callers_call_ends_the_warm_up()
    {
        var (app, dir, baseUri) = await StartAsync("--Bursar:Server:WarmUpTime=00:00:30");
        try
        {
            using var http = new HttpClient { BaseAddress = baseUri };
            var gate = app.Services.GetRequiredService<RehearsalGate>();
            Assert.NotNull(gate.Token);
            // a guessed token (right length, wrong bits), a malformed one, and none at all: each is a caller without a key
            foreach (var forged in new[] { new string('a', 64), "not-hex-" + new string('z', 56), "" })
            {
                using var req = Chat(null, stream: true);
                req.Headers.Remove(RehearsalGate.Header);
                if (forged.Length > 0) req.Headers.TryAddWithoutValidation(RehearsalGate.Header, forged);
                using var resp = await http.SendAsync(req);
                Assert.Equal(HttpStatusCode.Unauthorized, resp.StatusCode);
            }
            // the warm-up upstream does not answer a forged token either
            using var upstream = await WarmUpUpstreamAsync(http, new string('b', 64));
            Assert.Equal(HttpStatusCode.NotFound, upstream.StatusCode);
            // callers' calls arrived: the warm-up ends well before its 30 s and says why
            var said = (await ReadyAsync(http))["checks"]!["warm_up"]!["description"]!.GetValue<string>();
            Assert.Contains("ended early: callers' calls arrived", said);
            // the refused calls are on the ledger as any refusal is; no warm-up call is
            await app.Services.GetRequiredService<LedgerWriter>().FlushAsync();
            Assert.Equal(3, await app.Services.GetRequiredService<ILedgerStore>().CountAsync(default));
        }
        finally { await StopAsync(app, dir); }
    }

    [Fact]
    public async Task A_zero_warm_up_time_leaves_only_the_pieces_and_a_negative_one_is_refused_at_start()
    {
        var (app, dir, baseUri) = await StartAsync("--Bursar:Server:WarmUpTime=0");
        try
        {
            using var http = new HttpClient { BaseAddress = baseUri };
            var said = (await ReadyAsync(http))["checks"]!["warm_up"]!["description"]!.GetValue<string>();
            Assert.DoesNotContain("request path", said);
            Assert.Equal(0, app.Services.GetRequiredService<GatewayWarmup>().Calls);
        }
        finally { await StopAsync(app, dir); }

        var bad = Path.Combine(Path.GetTempPath(), "bursar-warm-" + Guid.NewGuid().ToString("N"));
        await using var broken = GatewayHost.Build(["--urls=http://127.0.0.1:0", "--Bursar:DataDirectory=" + bad, "--Bursar:Server:WarmUpTime=-00:00:01"]);
        var e = await Assert.ThrowsAnyAsync<Exception>(() => broken.StartAsync());
        Assert.Contains("Bursar:Server:WarmUpTime must be a time span of 0 or more", e.ToString());
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(bad, true); } catch (IOException) { }
    }

    [Theory]
    [InlineData("http://127.0.0.1:5000", "http://127.0.0.1:5000/")]
    [InlineData("http://0.0.0.0:8080", "http://127.0.0.1:8080/")]
    [InlineData("http://[::]:8080", "http://[::1]:8080/")]
    [InlineData("http://localhost:5001", "http://127.0.0.1:5001/")]
    [InlineData("http://+:80", "http://127.0.0.1/")]
    [InlineData("https://127.0.0.1:5443", null)]
    [InlineData("http://unix:/run/bursar.sock", null)]
    public void The_warm_up_calls_an_address_this_machine_reaches(string listening, string? called) =>
        Assert.Equal(called, GatewayWarmup.Loopback([listening])?.ToString());
}
