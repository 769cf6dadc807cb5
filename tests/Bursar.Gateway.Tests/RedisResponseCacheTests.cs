using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;

namespace Bursar.Gateway.Tests;

/// <summary>A real redis-server on a free port, for the life of one test class (test.sh installs Debian's redis-server).</summary>
public sealed class RedisServer : IAsyncLifetime
{
    private Process? _process;
    private int _port;

    /// <summary>A server on a given port (a restart on the address clients already use).</summary>
    public static RedisServer OnPort(int port) => new() { _port = port };

    /// <summary>A server that keeps its data in <paramref name="dir"/> (append-only file, fsync on every write), as production should run it; a restart on the same port and folder has it back.</summary>
    public static RedisServer Persistent(string dir, int port = 0) => new() { _port = port, _dir = dir };

    private string? _dir;

    public int Port { get; private set; }
    public string ConnectionString => $"127.0.0.1:{Port}";

    public async Task InitializeAsync()
    {
        if (_port == 0)
        {
            var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            Port = ((IPEndPoint)listener.LocalEndpoint).Port;
            listener.Stop();
        }
        else Port = _port;
        var exe = File.Exists("/usr/bin/redis-server") ? "/usr/bin/redis-server" : "redis-server";
        if (_dir is not null) Directory.CreateDirectory(_dir);
        var persistence = _dir is null ? "--appendonly no" : $"--appendonly yes --appendfsync always --dir \"{_dir}\"";
        _process = Process.Start(new ProcessStartInfo(exe, $"--port {Port} --bind 127.0.0.1 --save \"\" {persistence}")
            { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false })
            ?? throw new InvalidOperationException("redis-server did not start (install Debian's redis-server; test.sh does)");
        for (var i = 0; i < 100; i++)
        {
            try
            {
                using var c = new TcpClient();
                await c.ConnectAsync(IPAddress.Loopback, Port);
                return;
            }
            catch (SocketException) { await Task.Delay(50); }
        }
        throw new InvalidOperationException($"redis-server did not listen on {Port}");
    }

    public void Stop()
    {
        if (_process is { HasExited: false }) { _process.Kill(); _process.WaitForExit(5000); }
    }

    public Task DisposeAsync()
    {
        Stop();
        _process?.Dispose();
        return Task.CompletedTask;
    }
}

/// <summary>The exact response cache in Redis: shared by two gateway instances, expiring with its TTL, and a Redis outage is only a miss.</summary>
public sealed class RedisResponseCacheTests(RedisServer redis) : IClassFixture<RedisServer>
{
    private static string Chat(string text) => new JsonObject
    {
        ["model"] = "gpt-4o-mini", ["temperature"] = 0,
        ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }),
    }.ToJsonString();

    private static async Task<(HttpStatusCode Status, string? Cache, string Body)> Send(GatewayFixture gw, string json, string feature, string? key = null)
    {
        using var resp = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", json, key, feature: feature));
        return (resp.StatusCode, resp.Headers.TryGetValues("x-bursar-cache", out var v) ? v.Single() : null, await resp.Content.ReadAsStringAsync());
    }

    private ConfiguredGateway Gateway(params string[] extra) => new([$"--Bursar:ResponseCache:Redis={redis.ConnectionString}", .. extra]);

    [Fact]
    public async Task Two_gateways_share_the_cache_and_entries_expire()
    {
        var a = Gateway("--Bursar:ResponseCache:TtlByFeature:redis-ttl=00:00:02");
        var b = Gateway("--Bursar:ResponseCache:TtlByFeature:redis-ttl=00:00:02");
        await a.InitializeAsync();
        await b.InitializeAsync();
        try
        {
            // the same tenant on both instances (entries are scoped by tenant: another key would not see them)
            var key = (await a.Store.ListAsync(default)).Single(k => k.Hash == Bursar.Core.Keys.VirtualKey.HashSecret(a.Key));
            await b.Store.AddAsync(key, default);
            var json = Chat("Shared answer " + Guid.NewGuid());
            var first = await Send(a, json, "redis-shared");
            Assert.Equal(("miss", HttpStatusCode.OK), (first.Cache, first.Status));
            // the first caller has its answer a moment before the entry lands in Redis: another instance sees it right after
            async Task<(HttpStatusCode Status, string? Cache, string Body)> Eventually(string body, string feature)
            {
                var r = await Send(b, body, feature, a.Key);
                for (var i = 0; i < 20 && r.Cache != "hit"; i++) { await Task.Delay(25); r = await Send(b, body, feature, a.Key); }
                return r;
            }
            var second = await Eventually(json, "redis-shared"); // another instance: the entry is in Redis
            Assert.Equal("miss", (await Send(b, json, "redis-shared")).Cache); // b's own key is another tenant
            Assert.Equal("hit", second.Cache);
            Assert.Equal(first.Body, second.Body);
            var row = (await b.LedgerAsync("redis-shared", 2)).Where(r => r.KeyId == key.Id).Single(r => r.Provider == "bursar-cache");
            Assert.Equal(0m, row.Cost);
            Assert.True(row.SavingResponseCache > 0);

            var short_ = Chat("Short-lived " + Guid.NewGuid());
            Assert.Equal("miss", (await Send(a, short_, "redis-ttl")).Cache);
            Assert.Equal("hit", (await Eventually(short_, "redis-ttl")).Cache);
            await Task.Delay(TimeSpan.FromSeconds(2.5)); // Redis expires the key itself
            Assert.Equal("miss", (await Send(b, short_, "redis-ttl", a.Key)).Cache);
        }
        finally
        {
            await a.DisposeAsync();
            await b.DisposeAsync();
        }
    }

    [Fact]
    public void Entries_round_trip_exactly()
    {
        var entry = new Bursar.Core.Caching.CachedResponse([1, 2, 3, 0, 255], "text/event-stream", "gpt-4o-mini", 0.000123456789m, 12, 34, DateTimeOffset.UnixEpoch.AddDays(1));
        var back = Bursar.Caching.Redis.RedisResponseCacheStore.Decode(Bursar.Caching.Redis.RedisResponseCacheStore.Encode(entry));
        Assert.Equal(entry.Body, back.Body);
        Assert.Equal(entry with { Body = back.Body }, back);
        Assert.Throws<ArgumentException>(() => Bursar.Caching.Redis.RedisResponseCacheStore.Decode([255, 255, 255, 127, 1]));
    }
}

/// <summary>Redis going away mid-flight: calls keep being answered (as misses), nothing fails.</summary>
public sealed class RedisOutageTests
{
    [Fact]
    public async Task A_redis_outage_is_a_cache_miss_not_a_failed_call()
    {
        var redis = new RedisServer();
        await redis.InitializeAsync();
        var gw = new ConfiguredGateway([$"--Bursar:ResponseCache:Redis={redis.ConnectionString}"]);
        await gw.InitializeAsync();
        try
        {
            var json = new JsonObject { ["model"] = "gpt-4o-mini", ["temperature"] = 0, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "outage " + Guid.NewGuid() }) }.ToJsonString();
            using (var r = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", json, feature: "redis-down"))) Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            redis.Stop();
            for (var i = 0; i < 3; i++)
            {
                using var r = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", json, feature: "redis-down"));
                Assert.Equal(HttpStatusCode.OK, r.StatusCode);
                Assert.Equal("miss", r.Headers.GetValues("x-bursar-cache").Single());
            }
            Assert.Equal(4, (await gw.LedgerAsync("redis-down", 4)).Count(x => x.Outcome == "ok"));
        }
        finally
        {
            await gw.DisposeAsync();
            await redis.DisposeAsync();
        }
    }
}
