using Bursar.Core.Keys;
using Bursar.Gateway.Auth;
using Bursar.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Gateway.Tests;

/// <summary>The key check while the key store (PostgreSQL restarting, a network cut) is unreachable: a key seen before is trusted as last read and the store is retried once a second, an unseen key gets a 503 naming the store, never a 500.</summary>
public sealed class KeyStoreOutageTests
{
    private sealed class FlakyKeyStore : IKeyStore
    {
        public Dictionary<string, VirtualKey> Keys { get; } = [];
        public bool Down { get; set; }
        public int Reads => _reads;
        public Task Gate { get; set; } = Task.CompletedTask;
        private int _reads;

        public Task AddAsync(VirtualKey key, CancellationToken cancellationToken)
        {
            Keys[key.Hash] = key;
            return Task.CompletedTask;
        }

        public async Task<VirtualKey?> FindByHashAsync(string hash, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _reads);
            await Gate;
            if (Down) throw new IOException("connection refused (127.0.0.1:5432)");
            return Keys.GetValueOrDefault(hash);
        }

        public Task<IReadOnlyList<VirtualKey>> ListAsync(CancellationToken cancellationToken) => Task.FromResult<IReadOnlyList<VirtualKey>>([.. Keys.Values]);
        public Task<bool> RevokeAsync(string idOrPrefix, DateTimeOffset when, CancellationToken cancellationToken) => Task.FromResult(false);
    }

    private static HttpRequest Request(string secret)
    {
        var ctx = new DefaultHttpContext();
        ctx.Request.Headers.Authorization = "Bearer " + secret;
        return ctx.Request;
    }

    [Fact]
    public async Task A_key_seen_before_is_trusted_as_last_read_while_the_store_is_down_and_an_unseen_one_gets_a_503_naming_the_store()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-12-03T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var store = new FlakyKeyStore();
        var known = VirtualKey.NewSecret();
        var unseen = VirtualKey.NewSecret();
        foreach (var (id, secret) in new[] { ("key_known", known), ("key_unseen", unseen) })
            await store.AddAsync(new VirtualKey { Id = id, Hash = VirtualKey.HashSecret(secret), Prefix = VirtualKey.DisplayPrefix(secret), CreatedAt = time.GetUtcNow() }, default);
        var options = new BursarOptions { KeyCacheDuration = TimeSpan.FromSeconds(5) };
        var auth = new KeyAuthenticator(store, options, time, NullLogger<KeyAuthenticator>.Instance);
        Assert.Equal("key_known", (await auth.AuthenticateAsync(Request(known), default)).Key!.Id);

        store.Down = true;
        time.Advance(TimeSpan.FromSeconds(6)); // past the cache duration: the store is asked, and fails
        var (stale, error) = await auth.AuthenticateAsync(Request(known), default);
        Assert.Null(error);
        Assert.Equal("key_known", stale!.Id);
        var reads = store.Reads;
        for (var i = 0; i < 50; i++) await auth.AuthenticateAsync(Request(known), default);
        Assert.Equal(reads, store.Reads); // not on every call while it is down
        time.Advance(TimeSpan.FromSeconds(1.1));
        await auth.AuthenticateAsync(Request(known), default);
        Assert.Equal(reads + 1, store.Reads); // once a second

        var (none, refused) = await auth.AuthenticateAsync(Request(unseen), default);
        Assert.Null(none);
        Assert.Equal(503, refused!.Status);
        Assert.Equal("key_store_unavailable", refused.Code);
        Assert.Equal(2, refused.RetryAfterSeconds);
        Assert.Contains("key store is unreachable (IOException: connection refused (127.0.0.1:5432))", refused.Message);
        Assert.Contains(VirtualKey.DisplayPrefix(unseen), refused.Message);

        store.Down = false; // back: both keys are read again
        time.Advance(TimeSpan.FromSeconds(1.1));
        Assert.Equal("key_unseen", (await auth.AuthenticateAsync(Request(unseen), default)).Key!.Id);
        Assert.Equal("key_known", (await auth.AuthenticateAsync(Request(known), default)).Key!.Id);
    }

    [Fact]
    public async Task A_burst_of_calls_on_a_cold_key_reads_the_store_once()
    {
        var time = new FakeTimeProvider();
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var store = new FlakyKeyStore { Gate = gate.Task };
        var secret = VirtualKey.NewSecret();
        await store.AddAsync(new VirtualKey { Id = "key_burst", Hash = VirtualKey.HashSecret(secret), Prefix = VirtualKey.DisplayPrefix(secret), CreatedAt = time.GetUtcNow() }, default);
        var auth = new KeyAuthenticator(store, new BursarOptions(), time, NullLogger<KeyAuthenticator>.Instance);
        var calls = Enumerable.Range(0, 200).Select(_ => auth.AuthenticateAsync(Request(secret), default).AsTask()).ToArray();
        using var gone = new CancellationTokenSource();
        var abandoned = auth.AuthenticateAsync(Request(secret), gone.Token).AsTask();
        await gone.CancelAsync(); // one caller going away does not fail the read the others wait for
        gate.SetResult();
        var results = await Task.WhenAll(calls);
        Assert.All(results, r => Assert.Equal("key_burst", r.Key!.Id));
        Assert.Equal(1, store.Reads);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => abandoned);
    }
}
