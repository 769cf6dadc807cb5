using Bursar.Core.Attribution;
using Bursar.Core.Keys;

namespace Bursar.Core.Tests;

public sealed class AttributionTests
{
    private static VirtualKey Key(string? team = null, string? customer = null, string[]? allowed = null, string[]? customers = null, string id = "key_1") => new()
    {
        Id = id, Hash = "h", Prefix = "bsr_abcdefgh", Team = team, Customer = customer, AllowedTagHeaders = allowed, AllowedCustomers = customers, CreatedAt = DateTimeOffset.UnixEpoch,
    };

    private static Func<string, string?> Headers(params (string, string)[] h) => name => h.FirstOrDefault(x => x.Item1 == name).Item2;

    [Fact]
    public void Key_tags_apply_and_headers_add_the_rest()
    {
        var a = AttributionResolver.Resolve(Key(team: "eng", customers: ["acme"]), Headers(("x-bursar-feature", "search"), ("x-bursar-customer", "acme"), ("x-bursar-run", "r1")), out var err);
        Assert.Null(err);
        Assert.Equal(("eng", "acme", "search", "r1", "key_1"), (a.Team, a.Customer, a.Feature, a.RunId, a.KeyId));
    }

    [Fact]
    public void A_header_cannot_override_a_tag_the_key_fixes()
    {
        AttributionResolver.Resolve(Key(team: "eng"), Headers(("x-bursar-team", "finance")), out var err);
        Assert.NotNull(err);
        Assert.Equal("x-bursar-team", err!.Header);
        Assert.Contains("eng", err.Message);
    }

    [Fact]
    public void A_key_policy_limits_which_headers_callers_may_set()
    {
        AttributionResolver.Resolve(Key(allowed: ["feature"]), Headers(("x-bursar-feature", "a")), out var ok);
        Assert.Null(ok);
        AttributionResolver.Resolve(Key(allowed: ["feature"]), Headers(("x-bursar-team", "eng")), out var err);
        Assert.Equal("x-bursar-team", err!.Header);
        Assert.Contains("feature", err.Message);
    }

    [Fact]
    public void A_key_without_a_customers_list_may_not_name_a_customer_and_is_told_how_to_allow_it()
    {
        var a = AttributionResolver.Resolve(Key(), Headers(("x-bursar-customer", "acme")), out var err);
        Assert.Null(a.Customer);
        Assert.Equal("x-bursar-customer", err!.Header);
        Assert.Contains("--customers", err.Message);
        Assert.Contains("allowed_customers", err.Message);
        // even a tag policy that lists customer does not let a key name just anyone
        AttributionResolver.Resolve(Key(allowed: ["customer", "feature"]), Headers(("x-bursar-customer", "acme")), out err);
        Assert.Equal("x-bursar-customer", err!.Header);
    }

    [Fact]
    public void A_key_names_only_the_customers_its_policy_lists()
    {
        var ok = AttributionResolver.Resolve(Key(customers: ["acme", "globex"]), Headers(("x-bursar-customer", "globex")), out var none);
        Assert.Null(none);
        Assert.Equal("globex", ok.Customer);
        var refused = AttributionResolver.Resolve(Key(customers: ["acme", "globex"]), Headers(("x-bursar-customer", "initech")), out var err);
        Assert.Null(refused.Customer);
        Assert.Equal("x-bursar-customer", err!.Header);
        Assert.Contains("'initech'", err.Message);
        Assert.Contains("acme, globex", err.Message);
        var any = AttributionResolver.Resolve(Key(customers: ["*"]), Headers(("x-bursar-customer", "initech")), out var anyErr);
        Assert.Null(anyErr);
        Assert.Equal("initech", any.Customer);
    }

    [Fact]
    public void The_cache_tenant_is_the_keys_own_scope_plus_the_tags_so_a_header_never_reaches_another_keys_answers()
    {
        var acmeKey = Key(customer: "acme", id: "key_acme");
        var other = Key(customers: ["*"], id: "key_other");
        var a = AttributionResolver.Resolve(acmeKey, Headers(), out _);
        var b = AttributionResolver.Resolve(other, Headers(("x-bursar-customer", "acme")), out _);
        Assert.Equal(a.Customer, b.Customer);
        Assert.NotEqual(Caching.ResponseCacheKey.Tenant(acmeKey, a), Caching.ResponseCacheKey.Tenant(other, b));
        // keys the operator gave the same fixed team share answers; the customer they name still partitions them
        var t1 = Key(team: "eng", customers: ["*"], id: "key_t1");
        var t2 = Key(team: "eng", customers: ["*"], id: "key_t2");
        var x = AttributionResolver.Resolve(t1, Headers(("x-bursar-customer", "acme")), out _);
        Assert.Equal(Caching.ResponseCacheKey.Tenant(t1, x), Caching.ResponseCacheKey.Tenant(t2, AttributionResolver.Resolve(t2, Headers(("x-bursar-customer", "acme")), out _)));
        Assert.NotEqual(Caching.ResponseCacheKey.Tenant(t1, x), Caching.ResponseCacheKey.Tenant(t2, AttributionResolver.Resolve(t2, Headers(("x-bursar-customer", "globex")), out _)));
    }

    [Fact]
    public void Overlong_tag_values_are_refused()
    {
        AttributionResolver.Resolve(Key(), Headers(("x-bursar-feature", new string('x', 500))), out var err);
        Assert.Contains("128", err!.Message);
    }

    [Fact]
    public void Secrets_are_hashed_and_random()
    {
        var a = VirtualKey.NewSecret();
        var b = VirtualKey.NewSecret();
        Assert.StartsWith("bsr_", a);
        Assert.NotEqual(a, b);
        Assert.Equal(VirtualKey.HashSecret(a), VirtualKey.HashSecret(a));
        Assert.NotEqual(VirtualKey.HashSecret(a), VirtualKey.HashSecret(b));
        Assert.Equal(64, VirtualKey.HashSecret(a).Length);
    }

    [Theory]
    [InlineData("\u001b[2J\u001b[31mPWNED")]
    [InlineData("a\tb")]
    [InlineData("a\u007fb")]
    [InlineData("a\u009bb")]
    [InlineData("a\u0000")]
    public void A_tag_with_a_control_character_is_refused_as_malformed_naming_the_header(string value)
    {
        var a = AttributionResolver.Resolve(Key(), Headers(("x-bursar-team", value)), out var err);
        Assert.NotNull(err);
        Assert.True(err!.Malformed);
        Assert.Equal("x-bursar-team", err.Header);
        Assert.Contains("x-bursar-team", err.Message);
        Assert.Contains("control character", err.Message);
        Assert.Null(a.Team);
    }

    [Fact]
    public void Printable_unicode_tags_are_accepted()
    {
        var a = AttributionResolver.Resolve(Key(), Headers(("x-bursar-team", "équipe-数据 ok")), out var err);
        Assert.Null(err);
        Assert.Equal("équipe-数据 ok", a.Team);
    }

    [Fact]
    public void Terminal_text_escapes_every_control_character_and_keeps_the_rest()
    {
        Assert.Equal("\\x1B[2J\\x1B[31mPWNED", Bursar.Core.Reporting.TerminalText.Escape("\u001b[2J\u001b[31mPWNED"));
        Assert.Equal("a\\x0Ab\\x7F\\x9B", Bursar.Core.Reporting.TerminalText.Escape("a\nb\u007f\u009b"));
        Assert.Equal("plain équipe", Bursar.Core.Reporting.TerminalText.Escape("plain équipe"));
        Assert.Equal("", Bursar.Core.Reporting.TerminalText.Escape(null));
    }
}
