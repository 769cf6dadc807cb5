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
        public int Reads { get; private set; }

        public Task AddAsync(VirtualKey key, CancellationToken cancellationToken)
        {
            Keys[key.Hash] = key;
            return Task.CompletedTask;
        }

        public Task<VirtualKey?> FindByHashAsync(string hash, CancellationToken cancellationToken)
        {
            Reads++;
            if (Down) throw new IOException("connection refused (127.0.0.1:5432)");
            return Task.FromResult(Keys.GetValueOrDefault(hash));
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
}
