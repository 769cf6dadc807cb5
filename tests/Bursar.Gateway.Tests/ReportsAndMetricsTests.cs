using System.Net;
using System.Text.Json.Nodes;

namespace Bursar.Gateway.Tests;

/// <summary>The admin reports API and the Prometheus /metrics endpoint, against calls made through the gateway.</summary>
[Collection(GatewayCollection.Name)]
public sealed class ReportsAndMetricsTests(GatewayFixture gw)
{
    private static string Chat(string text) => new JsonObject
    {
        ["model"] = "gpt-4o-mini", ["temperature"] = 0.7,
        ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }),
    }.ToJsonString();

    [Fact]
    public async Task Spend_report_by_feature_matches_the_ledger()
    {
        var feature = "report-" + Guid.NewGuid().ToString("N")[..8];
        for (var i = 0; i < 3; i++)
        {
            using var resp = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", Chat($"hello {i} {feature}"), feature: feature));
            Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
        }
        var rows = await gw.LedgerAsync(feature, 3);
        var (status, body) = await gw.AdminAsync(HttpMethod.Get, "/admin/reports/spend?by=feature&days=1");
        Assert.Equal(HttpStatusCode.OK, status);
        var row = body!["rows"]!.AsArray().Single(r => (string?)r!["group"] == feature)!;
        Assert.Equal(3, (long)row["calls"]!);
        Assert.Equal(rows.Sum(r => r.Cost!.Value), (decimal)row["cost"]!);
        Assert.Equal(rows.Sum(r => r.OutputTokens), (long)row["output_tokens"]!);
        Assert.NotEmpty(body["trend"]!.AsArray());
    }

    [Fact]
    public async Task Reports_name_a_bad_dimension_or_window_and_need_the_admin_key()
    {
        var (status, body) = await gw.AdminAsync(HttpMethod.Get, "/admin/reports/spend?by=planet");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("planet", (string)body!["detail"]!);
        (status, body) = await gw.AdminAsync(HttpMethod.Get, "/admin/reports/spend?from=yesterday");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("ISO 8601", (string)body!["detail"]!);
        (status, _) = await gw.AdminAsync(HttpMethod.Get, "/admin/reports/spend", adminKey: "wrong");
        Assert.Equal(HttpStatusCode.Unauthorized, status);
    }

    [Fact]
    public async Task Metrics_expose_spend_tokens_and_calls_in_prometheus_text_with_genai_names()
    {
        var feature = "metrics-" + Guid.NewGuid().ToString("N")[..8];
        using (var resp = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", Chat("count me " + feature), feature: feature)))
            Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
        await gw.LedgerAsync(feature, 1);
        string text = "";
        // the Prometheus exporter caches a scrape for a moment; poll until the call shows
        for (var i = 0; i < 50 && !text.Contains("bursar_cost_USD_total", StringComparison.Ordinal); i++)
        {
            text = await gw.Http.GetStringAsync("/metrics");
            await Task.Delay(100);
        }
        Assert.Contains("gen_ai_client_token_usage", text);
        Assert.Contains("gen_ai_token_type=\"output\"", text);
        Assert.Contains("gen_ai_response_model=\"gpt-4o-mini", text);
        Assert.Contains("bursar_cost_USD_total", text);
        Assert.Contains("bursar_calls", text);
        Assert.Contains("gen_ai_client_operation_duration_seconds", text);
    }

    [Fact]
    public async Task Each_call_emits_a_span_with_the_genai_usage_attributes()
    {
        var feature = "span-" + Guid.NewGuid().ToString("N")[..8];
        var spans = new System.Collections.Concurrent.ConcurrentBag<System.Diagnostics.Activity>();
        using var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = s => s.Name == Bursar.Core.Metering.CallMeter.MeterName,
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => { if ((string?)a.GetTagItem("bursar.feature") == feature) spans.Add(a); },
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);
        using (var resp = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", Chat("trace me " + feature), feature: feature)))
            Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
        var row = Assert.Single(await gw.LedgerAsync(feature));
        var span = Assert.Single(spans);
        Assert.Equal("chat gpt-4o-mini", span.DisplayName);
        Assert.Equal("chat", span.GetTagItem("gen_ai.operation.name"));
        Assert.Equal("gpt-4o-mini", span.GetTagItem("gen_ai.request.model"));
        Assert.Equal(row.Usage.TotalInputTokens, span.GetTagItem("gen_ai.usage.input_tokens"));
        Assert.Equal(row.OutputTokens, span.GetTagItem("gen_ai.usage.output_tokens"));
        Assert.Equal(row.CacheReadTokens, span.GetTagItem("gen_ai.usage.cache_read.input_tokens"));
        Assert.Equal(row.Cost!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture), span.GetTagItem("bursar.cost_usd"));
    }
}
