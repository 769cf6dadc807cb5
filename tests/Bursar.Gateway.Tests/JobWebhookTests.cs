using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Batch;
using Bursar.Core.Keys;
using Bursar.Gateway.Batch;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Tests;

/// <summary>A local HTTP listener that records webhook deliveries and fails the first <see cref="FailFirst"/> of them.</summary>
internal sealed class WebhookReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;
    public ConcurrentQueue<(string Signature, string Id, string Attempt, string Body)> Received { get; } = new();
    public int FailFirst { get; set; }
    private int _calls;

    private WebhookReceiver(WebApplication app) => _app = app;

    public string Url { get; private set; } = "";

    public static async Task<WebhookReceiver> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder(["--urls=http://127.0.0.1:0"]);
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        var app = builder.Build();
        var r = new WebhookReceiver(app);
        app.MapPost("/hook", async (HttpContext ctx) =>
        {
            using var reader = new StreamReader(ctx.Request.Body);
            var body = await reader.ReadToEndAsync();
            if (Interlocked.Increment(ref r._calls) <= r.FailFirst) return Results.StatusCode(503);
            r.Received.Enqueue((ctx.Request.Headers[WebhookOptions.SignatureHeader].ToString(), ctx.Request.Headers["x-bursar-webhook-id"].ToString(), ctx.Request.Headers["x-bursar-webhook-attempt"].ToString(), body));
            return Results.Ok();
        });
        await app.StartAsync();
        r.Url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First() + "/hook";
        return r;
    }

    public int Calls => Volatile.Read(ref _calls);

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

/// <summary>The signed webhook per key: one delivery per ended job, signed with the key's secret, retried with backoff, not lost to a restart.</summary>
[Collection("batch")]
public sealed class JobWebhookTests : IAsyncDisposable
{
    private const string Secret = "whsec-test-0123456789abcdef";
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-webhook-" + Guid.NewGuid().ToString("N"));

    public async ValueTask DisposeAsync()
    {
        await Task.Yield();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private Task<BatchHost> StartAsync(string keyId, string url, params string[] extra) => BatchHost.StartAsync(_dir,
        ["--Bursar:Deferral:MaxWait=00:00:00.200", "--Bursar:Deferral:FlushInterval=00:00:00.050", $"--Bursar:Webhooks:Keys:{keyId}:Url={url}", $"--Bursar:Webhooks:Keys:{keyId}:Secret={Secret}",
         "--Bursar:Webhooks:DispatchInterval=00:00:00.050", "--Bursar:Webhooks:FirstRetryDelay=00:00:00.100", .. extra]);

    private static async Task<string> DeferAsync(BatchHost gw, string secret, string feature)
    {
        var (status, _, resp) = await DeferralGatewayTests.Call(gw.Http, secret, "/v1/chat/completions", DeferralGatewayTests.OpenAIBody("nightly report [[sim:tokens=40]]"), feature, defer: "1h");
        Assert.Equal(HttpStatusCode.Accepted, status);
        return resp.Headers.Location!.ToString().Split('/')[^1];
    }

    private static async Task WaitAsync(Func<bool> done, int ms = 15_000)
    {
        for (var waited = 0; !done() && waited < ms; waited += 25) await Task.Delay(25);
        Assert.True(done(), "timed out");
    }

    private static void AssertSigned((string Signature, string Id, string Attempt, string Body) d)
    {
        // what a receiver does: recompute HMAC-SHA256("t.body") with the shared secret and compare in constant time
        var parts = d.Signature.Split(',').Select(p => p.Split('=', 2)).ToDictionary(p => p[0], p => p[1]);
        var expected = HMACSHA256.HashData(Encoding.UTF8.GetBytes(Secret), Encoding.UTF8.GetBytes(parts["t"] + "." + d.Body));
        Assert.True(CryptographicOperations.FixedTimeEquals(expected, Convert.FromHexString(parts["v1"])), "the signature does not verify");
        Assert.InRange(long.Parse(parts["t"], System.Globalization.CultureInfo.InvariantCulture), DateTimeOffset.UtcNow.ToUnixTimeSeconds() - 60, DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 5);
    }

    [Fact]
    public async Task A_key_with_a_webhook_hears_once_that_its_job_is_done_signed_with_its_secret_after_retries()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.FailFirst = 2; // two 503s: the third try, after backoff, is delivered
        var (key, secret) = KeyFactory.Create(TimeProvider.System, team: "hooks");
        var (other, otherSecret) = KeyFactory.Create(TimeProvider.System, team: "no-hooks");
        await using var gw = await StartAsync(key.Id, receiver.Url);
        await gw.Store.AddAsync(key, default);
        await gw.Store.AddAsync(other, default);
        var job = await DeferAsync(gw, secret, "hooked");
        await DeferAsync(gw, otherSecret, "not-hooked"); // a key without a webhook: nothing sent
        await WaitAsync(() => !receiver.Received.IsEmpty);
        await Task.Delay(500);
        var d = Assert.Single(receiver.Received);
        Assert.Equal(3, receiver.Calls);
        Assert.Equal((job, "3"), (d.Id, d.Attempt));
        AssertSigned(d);
        var payload = JsonNode.Parse(d.Body)!;
        Assert.Equal((job, "done", 200, "/v1/bursar/jobs/" + job), (payload["id"]!.GetValue<string>(), payload["status"]!.GetValue<string>(), payload["status_code"]!.GetValue<int>(), payload["location"]!.GetValue<string>()));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(_dir, "webhooks"), "*.json")); // delivered: nothing left to send
        // a tampered body does not verify
        Assert.Throws<Xunit.Sdk.TrueException>(() => AssertSigned(d with { Body = d.Body.Replace("done", "failed", StringComparison.Ordinal) }));
    }

    [Fact]
    public async Task A_delivery_the_receiver_never_took_is_sent_after_a_restart()
    {
        var (key, secret) = KeyFactory.Create(TimeProvider.System, team: "hooks");
        string job;
        await using (var down = await WebhookReceiver.StartAsync())
        {
            down.FailFirst = int.MaxValue; // the receiver is down for the first gateway's whole life
            await using var gw = await StartAsync(key.Id, down.Url);
            await gw.Store.AddAsync(key, default);
            job = await DeferAsync(gw, secret, "hooked-restart");
            await WaitAsync(() => down.Calls >= 2);
            Assert.Empty(down.Received);
        }
        Assert.Single(Directory.EnumerateFiles(Path.Combine(_dir, "webhooks"), "*.json")); // kept on disk across the stop
        await using var receiver = await WebhookReceiver.StartAsync();
        await using var again = await StartAsync(key.Id, receiver.Url);
        await WaitAsync(() => !receiver.Received.IsEmpty);
        var d = Assert.Single(receiver.Received);
        Assert.Equal(job, d.Id);
        Assert.True(int.Parse(d.Attempt, System.Globalization.CultureInfo.InvariantCulture) >= 3); // the attempts count carried over
        AssertSigned(d);
    }

    [Fact]
    public void A_webhook_without_a_usable_url_or_secret_is_refused_at_start_naming_the_key()
    {
        var bad = new WebhookOptions { Keys = { ["key_a"] = new WebhookEndpoint { Url = "ftp://x", Secret = Secret } } };
        Assert.Contains("Bursar:Webhooks:Keys:key_a:Url", Assert.Throws<InvalidOperationException>(bad.Validate).Message);
        var weak = new WebhookOptions { Keys = { ["key_b"] = new WebhookEndpoint { Url = "https://example.test/hook", Secret = "short" } } };
        Assert.Contains("Bursar:Webhooks:Keys:key_b:Secret", Assert.Throws<InvalidOperationException>(weak.Validate).Message);
        Assert.Equal(JobWebhooks.Sign(Secret, 1_700_000_000, "{}"), JobWebhooks.Sign(Secret, 1_700_000_000, "{}"));
    }
}
