using System.Net;
using System.Text.Json.Nodes;
using Bursar.Core.Budgets;
using Bursar.Core.Storage;
using Bursar.Storage.PostgreSql;
using Microsoft.Extensions.DependencyInjection;

namespace Bursar.Gateway.Tests;

/// <summary>The gateway on <c>Bursar:Store=postgres</c>: the same workload gives the same reports as on the embedded SQLite store.</summary>
public sealed class PostgresGatewayTests(PostgresServer pg) : IClassFixture<PostgresServer>
{
    /// <summary>A mixed workload, call after call: both dialects, a stream, runs, a response-cache hit, a budget refusal, an unpriced model.</summary>
    private static async Task<int> DriveAsync(GatewayFixture gw)
    {
        var store = gw.Services.GetRequiredService<IBursarStore>();
        await store.UpsertBudgetAsync(new BudgetDefinition { Id = "tight", Scope = BudgetScope.Customer, Value = "tight", Period = BudgetPeriod.Month, LimitUsd = 0.0000001m }, default);
        await gw.Services.GetRequiredService<BudgetManager>().ReloadAsync(default);
        var key = await gw.CreateKeyAsync(team: "eng", allowedCustomers: ["*"]);
        var calls = 0;
        async Task Send(string path, string json, string feature, string? customer = null, string? run = null)
        {
            using var req = gw.Post(path, json, key, feature: feature);
            if (customer is not null) req.Headers.Add("x-bursar-customer", customer);
            if (run is not null) req.Headers.Add("x-bursar-run", run);
            using var resp = await gw.Http.SendAsync(req);
            var text = await resp.Content.ReadAsStringAsync();
            Assert.True(resp.StatusCode == HttpStatusCode.OK || customer == "tight", $"{path} {feature}: {(int)resp.StatusCode} {text}");
            calls++;
        }
        string Chat(string model, string text, bool stream = false) => new JsonObject
        {
            ["model"] = model, ["temperature"] = 0, ["stream"] = stream, ["max_tokens"] = 200,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }),
        }.ToJsonString();
        string Messages(string model, string text) => new JsonObject
        {
            ["model"] = model, ["max_tokens"] = 200,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }),
        }.ToJsonString();
        for (var i = 0; i < 6; i++)
            await Send("/v1/chat/completions", Chat(i % 2 == 0 ? "gpt-4o-mini" : "gpt-4.1", $"Summarise ticket {i}: the invoice total looks wrong."), "support", "customer-" + (char)('a' + i % 3));
        for (var i = 0; i < 4; i++)
            await Send("/v1/messages", Messages(i % 2 == 0 ? "claude-haiku-4-5" : "claude-sonnet-4-5", $"Review change {i}: renamed a variable."), "code-review", "customer-a", run: "review-run-" + i);
        await Send("/v1/chat/completions", Chat("gpt-4o-mini", "Stream me a haiku about ledgers.", stream: true), "stream", "customer-b");
        await Send("/v1/chat/completions", Chat("gpt-4o-mini", "Cache me: what is a ledger?"), "faq");
        await Send("/v1/chat/completions", Chat("gpt-4o-mini", "Cache me: what is a ledger?"), "faq");
        await Send("/v1/chat/completions", Chat("gpt-4.1", "Refuse me, my budget is tiny."), "support", "tight");
        await Send("/v1/chat/completions", Chat("gpt-unpriced-x", "A model with no price."), "experiments");
        // every call leaves one row, written off the request path
        for (var i = 0; i < 400 && await store.CountAsync(default) < calls; i++) await Task.Delay(25);
        Assert.Equal(calls, await store.CountAsync(default));
        return calls;
    }

    /// <summary>The spend report through the admin API, without what differs from run to run (latency, the window's edges).</summary>
    private static async Task<string> ReportAsync(GatewayFixture gw, string by)
    {
        var (status, body) = await gw.AdminAsync(HttpMethod.Get, $"/admin/reports/spend?by={by}&days=2");
        Assert.Equal(HttpStatusCode.OK, status);
        var o = body!.AsObject();
        o.Remove("from");
        o.Remove("to");
        void Strip(JsonNode? n)
        {
            if (n is JsonObject obj)
            {
                obj.Remove("avg_latency_ms");
                foreach (var (_, v) in obj.ToArray()) Strip(v);
            }
            else if (n is JsonArray a) foreach (var v in a) Strip(v);
        }
        Strip(o);
        return o.ToJsonString();
    }

    [Fact]
    public async Task The_same_workload_reports_the_same_on_postgres_as_on_sqlite()
    {
        var cs = await pg.CreateDatabaseAsync();
        var onPostgres = new ConfiguredGateway(["--Bursar:Store=postgres", $"--Bursar:Postgres:ConnectionString={cs}"]);
        var onSqlite = new ConfiguredGateway([]);
        await onPostgres.InitializeAsync();
        await onSqlite.InitializeAsync();
        try
        {
            Assert.IsType<PostgresStore>(onPostgres.Store);
            Assert.IsType<Bursar.Storage.Sqlite.SqliteStore>(onSqlite.Store);
            // the key the fixture made, the budget and the ledger are in PostgreSQL
            using (var direct = new PostgresStore(cs)) Assert.Single(await direct.ListAsync(default)); // the fixture's key
            var n = await DriveAsync(onPostgres);
            Assert.Equal(n, await DriveAsync(onSqlite));
            foreach (var by in new[] { "feature", "model", "customer", "outcome", "day", "driver" })
                Assert.Equal(await ReportAsync(onSqlite, by), await ReportAsync(onPostgres, by));
            var costs = (await onPostgres.Store.ReadAsync(new(), default)).Select(r => (r.Feature, r.ServedModel, r.Outcome, r.Cost, r.InputTokens, r.OutputTokens)).Order().ToArray();
            Assert.Equal((await onSqlite.Store.ReadAsync(new(), default)).Select(r => (r.Feature, r.ServedModel, r.Outcome, r.Cost, r.InputTokens, r.OutputTokens)).Order().ToArray(), costs);
            Assert.Contains(costs, c => c.Outcome == "refused");
            Assert.Contains(await onPostgres.Store.ReadAsync(new(), default), r => r.SavingResponseCache > 0); // the repeated question came from the cache
            using var ready = await onPostgres.Http.GetAsync("/health/ready");
            Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        }
        finally
        {
            await onPostgres.DisposeAsync();
            await onSqlite.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_bad_store_setting_stops_the_gateway_at_start_naming_it()
    {
        var e = await Assert.ThrowsAnyAsync<Exception>(new ConfiguredGateway(["--Bursar:Store=mongo"]).InitializeAsync);
        Assert.Contains("Bursar:Store must be sqlite or postgres", e.ToString());
        e = await Assert.ThrowsAnyAsync<Exception>(new ConfiguredGateway(["--Bursar:Store=postgres"]).InitializeAsync);
        Assert.Contains("Bursar:Postgres:ConnectionString is empty", e.ToString());
        e = await Assert.ThrowsAnyAsync<Exception>(new ConfiguredGateway(["--Bursar:Store=postgres", "--Bursar:Postgres:ConnectionString=Host=127.0.0.1;Password=secret-pw;Bogus Key=1"]).InitializeAsync);
        Assert.Contains("Bursar:Postgres:ConnectionString is not a valid", e.ToString());
        Assert.DoesNotContain("secret-pw", e.ToString());
    }
}
