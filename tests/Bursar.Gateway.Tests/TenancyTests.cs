using System.Net;
using System.Text.Json.Nodes;

namespace Bursar.Gateway.Tests;

/// <summary>A caller cannot reach another tenant's cached answers or budgets by naming its customer in a header.</summary>
[Collection(GatewayCollection.Name)]
public sealed class TenancyTests(GatewayFixture gw)
{
    private async Task<(HttpStatusCode Status, string Body, string? Cache)> Send(string key, string feature, string text, string? customer = null)
    {
        // deterministic for the exact cache; the semantic cache is asked with a sampled temperature so the exact one stays out of the way
        var json = new JsonObject { ["model"] = "gpt-4o-mini", ["temperature"] = feature == "semantic-faq" ? 0.7 : 0, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }) }.ToJsonString();
        using var req = gw.Post("/v1/chat/completions", json, key, feature);
        if (customer is not null) req.Headers.Add("x-bursar-customer", customer);
        using var resp = await gw.Http.SendAsync(req);
        return (resp.StatusCode, await resp.Content.ReadAsStringAsync(), resp.Headers.TryGetValues("x-bursar-cache", out var v) ? v.Single() : null);
    }

    [Fact]
    public async Task A_key_with_no_customer_policy_naming_a_customer_gets_a_403_naming_the_header()
    {
        var (status, body, _) = await Send(gw.Key, "tenancy-default", "hello " + Guid.NewGuid(), customer: "acme");
        Assert.Equal(HttpStatusCode.Forbidden, status);
        var e = JsonNode.Parse(body)!["error"]!;
        Assert.Equal("permission_error", e["type"]!.GetValue<string>());
        Assert.Contains("x-bursar-customer", e["message"]!.GetValue<string>());
        Assert.Contains("--customers", e["message"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("cache-tenancy")]
    [InlineData("semantic-faq")]
    public async Task Naming_acmes_customer_never_reads_acmes_cached_answers(string feature)
    {
        var question = $"What is the refund window for order {Guid.NewGuid():N}?";
        var acme = await gw.CreateKeyAsync(team: null, customer: "acme-tenancy");
        Assert.Equal("miss", (await Send(acme, feature, question)).Cache);
        Assert.Equal(feature == "semantic-faq" ? "semantic-hit" : "hit", (await Send(acme, feature, question)).Cache);
        // another key, even one allowed to name acme (or anyone), has its own scope
        foreach (var other in new[] { await gw.CreateKeyAsync(team: null, allowedCustomers: ["acme-tenancy"]), await gw.CreateKeyAsync(team: null, allowedCustomers: ["*"]) })
        {
            var (status, _, cache) = await Send(other, feature, question, customer: "acme-tenancy");
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Equal("miss", cache);
        }
    }

    [Fact]
    public async Task A_key_names_only_its_listed_customers_and_spends_only_their_budgets()
    {
        var (put, _) = await gw.AdminAsync(HttpMethod.Put, "/admin/budgets/tenancy-acme", new { scope = "customer", value = "acme-budget", period = "day", limit_usd = 0.000001m });
        Assert.Equal(HttpStatusCode.OK, put);
        var listed = await gw.CreateKeyAsync(team: null, allowedCustomers: ["globex-budget"]);
        var (status, body, _) = await Send(listed, "tenancy-budget", "spend " + Guid.NewGuid(), customer: "acme-budget");
        Assert.Equal(HttpStatusCode.Forbidden, status);
        var message = JsonNode.Parse(body)!["error"]!["message"]!.GetValue<string>();
        Assert.Contains("'acme-budget'", message);
        Assert.Contains("globex-budget", message);
        Assert.Equal(HttpStatusCode.OK, (await Send(listed, "tenancy-budget", "spend " + Guid.NewGuid(), customer: "globex-budget")).Status);
        var acmeBudget = (await gw.AdminAsync(HttpMethod.Get, "/admin/budgets")).Body!.AsArray().Single(b => b!["id"]!.GetValue<string>() == "tenancy-acme")!;
        Assert.Equal(0m, acmeBudget["spent_usd"]!.GetValue<decimal>() + acmeBudget["reserved_usd"]!.GetValue<decimal>());
        await gw.AdminAsync(HttpMethod.Delete, "/admin/budgets/tenancy-acme");
    }

    [Fact]
    public async Task The_admin_API_creates_keys_with_allowed_customers_and_refuses_a_contradiction()
    {
        var (created, body) = await gw.AdminAsync(HttpMethod.Post, "/admin/keys", new { name = "multi", allowed_customers = new[] { "acme", "globex" } });
        Assert.Equal(HttpStatusCode.Created, created);
        Assert.Equal(["acme", "globex"], body!["key"]!["allowed_customers"]!.AsArray().Select(c => c!.GetValue<string>()));
        var secret = body["secret"]!.GetValue<string>();
        Assert.Equal(HttpStatusCode.OK, (await Send(secret, "tenancy-admin", "hi " + Guid.NewGuid(), customer: "globex")).Status);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(secret, "tenancy-admin", "hi " + Guid.NewGuid(), customer: "initech")).Status);

        var (bad, problem) = await gw.AdminAsync(HttpMethod.Post, "/admin/keys", new { customer = "acme", allowed_customers = new[] { "globex" } });
        Assert.Equal(HttpStatusCode.BadRequest, bad);
        Assert.Equal("allowed_customers", problem!["field"]!.GetValue<string>());
        Assert.Contains("fixed customer", problem["detail"]!.GetValue<string>());
    }
}
