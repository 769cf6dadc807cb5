using Bursar.Hosting;
using System.Net;
using System.Text.Json.Nodes;
using Bursar.Gateway.Auth;
using Bursar.Gateway.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Gateway.Tests;

/// <summary>The admin credential: constant-time key checks, per-IP throttling of wrong keys, server-side dashboard sessions.</summary>
public sealed class AdminAuthTests
{
    private sealed class Capture : ILogger<AdminAuth>
    {
        public List<(LogLevel Level, string Text)> Lines { get; } = [];
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Lines.Add((logLevel, formatter(state, exception)));
    }

    private static HttpContext From(string ip, string? adminKey = null)
    {
        var ctx = new DefaultHttpContext();
        ctx.Connection.RemoteIpAddress = IPAddress.Parse(ip);
        if (adminKey is not null) ctx.Request.Headers["x-admin-key"] = adminKey;
        return ctx;
    }

    [Fact]
    public void Ten_wrong_keys_in_a_minute_lock_that_IP_out_for_the_rest_of_it_and_only_that_IP()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-03-01T10:00:00Z"));
        var log = new Capture();
        var auth = new AdminAuth(new BursarOptions { AdminKey = "the-admin-key" }, time, log);
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal(AdminCheck.Wrong, auth.Check(From("203.0.113.7", "guess-" + i), out _));
            time.Advance(TimeSpan.FromSeconds(1));
        }
        // now even the right key is refused from that address: a blocked guesser learns nothing
        Assert.Equal(AdminCheck.Throttled, auth.Check(From("203.0.113.7", "the-admin-key"), out var retry));
        Assert.InRange(retry, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(60));
        Assert.Equal(AdminCheck.Throttled, auth.Attempt(From("203.0.113.7"), correct: true, out _)); // dashboard sign-in too
        // another address with the right key is not affected
        Assert.Equal(AdminCheck.Ok, auth.Check(From("198.51.100.2", "the-admin-key"), out _));
        // one warning, naming the address
        var warning = Assert.Single(log.Lines, l => l.Level == LogLevel.Warning);
        Assert.Contains("203.0.113.7", warning.Text);
        // the minute over, the right key works again
        time.Advance(retry);
        Assert.Equal(AdminCheck.Ok, auth.Check(From("203.0.113.7", "the-admin-key"), out _));
    }

    [Fact]
    public void Failures_spread_over_more_than_a_minute_do_not_lock_anyone_out()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-03-01T10:00:00Z"));
        var auth = new AdminAuth(new BursarOptions { AdminKey = "the-admin-key" }, time, new Capture());
        for (var i = 0; i < 30; i++)
        {
            Assert.Equal(AdminCheck.Wrong, auth.Check(From("203.0.113.8", "typo"), out _));
            time.Advance(TimeSpan.FromSeconds(7)); // fewer than 10 in any one window
        }
        Assert.Equal(AdminCheck.Ok, auth.Check(From("203.0.113.8", "the-admin-key"), out _));
    }

    [Fact]
    public void Admin_keys_are_compared_as_hashes_whatever_their_length()
    {
        var auth = new AdminAuth(new BursarOptions { AdminKey = "the-admin-key" }, TimeProvider.System, new Capture());
        Assert.True(auth.IsAdminKey("the-admin-key"));
        Assert.False(auth.IsAdminKey("the-admin-ke"));
        Assert.False(auth.IsAdminKey("the-admin-key-and-more"));
        Assert.False(auth.IsAdminKey(""));
        Assert.True(AdminAuth.SecretEquals("abc", "abc"));
        Assert.False(AdminAuth.SecretEquals("abc", "abcd"));
    }

    [Fact]
    public void Sessions_are_random_tokens_that_expire_after_their_fixed_lifetime_and_end_at_sign_out()
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-03-01T10:00:00Z"));
        var auth = new AdminAuth(new BursarOptions { AdminKey = "the-admin-key" }, time, new Capture());
        var a = auth.CreateSession();
        var b = auth.CreateSession();
        Assert.NotEqual(a, b);
        Assert.Equal(43, a.Length); // 32 bytes, base64url without padding
        Assert.DoesNotContain("the-admin-key", a);
        Assert.True(auth.IsSession(a));
        time.Advance(TimeSpan.FromHours(7.9));
        Assert.True(auth.IsSession(a)); // use does not extend it: the lifetime is fixed
        time.Advance(TimeSpan.FromHours(0.2));
        Assert.False(auth.IsSession(a));
        var c = auth.CreateSession();
        auth.EndSession(c);
        Assert.False(auth.IsSession(c));
        Assert.False(auth.IsSession("not-a-session"));
    }
}

/// <summary>The same rules through a real gateway: the dashboard cookie and the admin API.</summary>
public sealed class AdminSecurityGatewayTests : IAsyncLifetime
{
    private readonly ConfiguredGateway _gw = new([]);

    public Task InitializeAsync() => _gw.InitializeAsync();

    public Task DisposeAsync() => _gw.DisposeAsync();

    private HttpClient NoCookies() => new(new HttpClientHandler { UseCookies = false, AllowAutoRedirect = false }) { BaseAddress = new Uri(_gw.BaseUrl) };

    [Fact]
    public async Task Signing_in_sets_a_session_cookie_that_is_not_the_admin_key_and_signing_out_ends_it()
    {
        using var http = NoCookies();
        using var login = await http.PostAsync("/dashboard/login", new FormUrlEncodedContent([new("key", GatewayFixture.AdminKey)]));
        Assert.Equal(HttpStatusCode.Redirect, login.StatusCode);
        var setCookie = Assert.Single(login.Headers.GetValues("Set-Cookie"));
        Assert.DoesNotContain(GatewayFixture.AdminKey, setCookie);
        Assert.Contains("httponly", setCookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("samesite=strict", setCookie, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("secure", setCookie, StringComparison.OrdinalIgnoreCase); // plain HTTP here; Secure is set over HTTPS
        var cookie = setCookie.Split(';')[0];

        async Task<HttpStatusCode> WithCookie(string path, HttpMethod? method = null)
        {
            using var req = new HttpRequestMessage(method ?? HttpMethod.Get, path);
            req.Headers.Add("Cookie", cookie);
            using var resp = await http.SendAsync(req);
            return resp.StatusCode;
        }
        Assert.Equal(HttpStatusCode.OK, await WithCookie("/admin/budgets"));
        Assert.Equal(HttpStatusCode.OK, await WithCookie("/dashboard"));
        Assert.Equal(HttpStatusCode.Redirect, await WithCookie("/dashboard/logout", HttpMethod.Post));
        Assert.Equal(HttpStatusCode.Unauthorized, await WithCookie("/admin/budgets"));
        Assert.Equal(HttpStatusCode.Unauthorized, await WithCookie("/dashboard"));
        // the admin key itself as the cookie value is no credential
        cookie = "bursar_admin=" + GatewayFixture.AdminKey;
        Assert.Equal(HttpStatusCode.Unauthorized, await WithCookie("/admin/budgets"));
    }

    [Fact]
    public async Task Wrong_admin_keys_are_throttled_with_a_429_problem_and_retry_after()
    {
        for (var i = 0; i < 10; i++)
        {
            var (status, body) = await _gw.AdminAsync(HttpMethod.Get, "/admin/budgets", adminKey: "wrong-" + i);
            Assert.Equal(HttpStatusCode.Unauthorized, status);
            Assert.Equal("Wrong admin key", body!["title"]!.GetValue<string>());
        }
        using var req = new HttpRequestMessage(HttpMethod.Get, "/admin/budgets");
        req.Headers.Add("x-admin-key", GatewayFixture.AdminKey);
        using var resp = await _gw.Http.SendAsync(req);
        Assert.Equal(HttpStatusCode.TooManyRequests, resp.StatusCode);
        Assert.Equal("application/problem+json", resp.Content.Headers.ContentType?.MediaType);
        Assert.InRange(int.Parse(resp.Headers.GetValues("retry-after").Single(), System.Globalization.CultureInfo.InvariantCulture), 1, 60);
        var problem = JsonNode.Parse(await resp.Content.ReadAsStringAsync())!;
        Assert.Contains("Bursar:AdminMaxFailuresPerMinute", problem["detail"]!.GetValue<string>());
        // the dashboard's sign-in is throttled for that address too
        using var http = NoCookies();
        using var login = await http.PostAsync("/dashboard/login", new FormUrlEncodedContent([new("key", GatewayFixture.AdminKey)]));
        Assert.Equal(HttpStatusCode.TooManyRequests, login.StatusCode);
    }
}

/// <summary>Revoking a key through the admin API bites on the very next call, although keys are cached for Bursar:KeyCacheDuration.</summary>
[Collection(GatewayCollection.Name)]
public sealed class RevokeTests(GatewayFixture gw)
{
    [Fact]
    public async Task A_key_revoked_through_the_admin_API_is_refused_on_the_next_call()
    {
        var (created, body) = await gw.AdminAsync(HttpMethod.Post, "/admin/keys", new { name = "to-revoke" });
        Assert.Equal(HttpStatusCode.Created, created);
        var secret = body!["secret"]!.GetValue<string>();
        var id = body["id"]!.GetValue<string>();
        const string json = """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""";
        using (var req = gw.Post("/v1/chat/completions", json, secret))
        using (var resp = await gw.Http.SendAsync(req)) Assert.Equal(HttpStatusCode.OK, resp.StatusCode); // the key is now cached
        var (revoked, _) = await gw.AdminAsync(HttpMethod.Post, $"/admin/keys/{id}/revoke");
        Assert.Equal(HttpStatusCode.OK, revoked);
        using var after = gw.Post("/v1/chat/completions", json, secret);
        using var refused = await gw.Http.SendAsync(after);
        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        Assert.Contains("revoked", await refused.Content.ReadAsStringAsync());
    }
}
