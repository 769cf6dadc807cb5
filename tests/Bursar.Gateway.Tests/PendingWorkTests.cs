using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using Microsoft.Playwright;
using static Bursar.Gateway.Tests.BatchGatewayTests;

namespace Bursar.Gateway.Tests;

/// <summary>The batch lever's work in flight on the admin API and the dashboard: deferred jobs waiting for a flush, batches not yet collected.</summary>
[Collection("batch")]
public sealed class PendingWorkTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-pending-" + Guid.NewGuid().ToString("N"));
    private BatchHost _gw = null!;
    private string _key = "";

    public async Task InitializeAsync()
    {
        // jobs wait an hour for their flush; provider batches take an hour to run
        _gw = await BatchHost.StartAsync(_dir, "--Bursar:Deferral:MaxWait=01:00:00", "--Bursar:Simulator:BatchProcessingTime=01:00:00");
        _key = await _gw.KeyAsync();
        for (var i = 0; i < 3; i++)
        {
            var (status, _, resp) = await DeferralGatewayTests.Call(_gw.Http, _key, "/v1/chat/completions", DeferralGatewayTests.OpenAIBody($"report {i}"), "pending", defer: "24h");
            resp.Dispose();
            Assert.Equal(HttpStatusCode.Accepted, status);
        }
        var (s, created) = await Send(_gw.Http, HttpMethod.Post, "/v1/messages/batches", _key, new StringContent(
            """{"requests":[{"custom_id":"a","params":{"model":"claude-haiku-4-5","max_tokens":50,"messages":[{"role":"user","content":"x"}]}},{"custom_id":"b","params":{"model":"claude-haiku-4-5","max_tokens":50,"messages":[{"role":"user","content":"y"}]}}]}""",
            System.Text.Encoding.UTF8, "application/json"), anthropic: true);
        Assert.True(s == HttpStatusCode.OK, created?.ToJsonString());
    }

    public async Task DisposeAsync()
    {
        await _gw.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    [Fact]
    public async Task The_admin_api_lists_queued_jobs_per_deployment_and_the_batches_not_yet_collected()
    {
        using var req = new HttpRequestMessage(HttpMethod.Get, "/admin/batches/pending");
        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "admin-test-key");
        using var resp = await _gw.Http.SendAsync(req);
        Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
        var work = JsonNode.Parse(await resp.Content.ReadAsStringAsync())!;
        Assert.Equal((3, 0), (work["queued_jobs"]!.GetValue<int>(), work["submitted_jobs"]!.GetValue<int>()));
        var queue = Assert.Single(work["queues"]!.AsArray());
        Assert.Equal(("gpt-4o-mini", 3), (queue!["model"]!.GetValue<string>(), queue["jobs"]!.GetValue<int>()));
        var batch = Assert.Single(work["open_batches"]!.AsArray());
        Assert.Equal(("anthropic", "running", 2, "in_progress"), (batch!["dialect"]!.GetValue<string>(), batch["phase"]!.GetValue<string>(), batch["lines"]!.GetValue<int>(), batch["provider_status"]!.GetValue<string>()));

        using var anonymous = new HttpRequestMessage(HttpMethod.Get, "/admin/batches/pending");
        Assert.Equal(HttpStatusCode.Unauthorized, (await _gw.Http.SendAsync(anonymous)).StatusCode);
    }

    [Fact]
    public async Task The_dashboard_shows_the_pending_jobs_and_batches()
    {
        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = "/usr/bin/chromium", Headless = true, Args = ["--no-sandbox"] });
        var page = await browser.NewPageAsync();
        var errors = new List<string>();
        page.PageError += (_, e) => errors.Add(e);
        await page.GotoAsync(_gw.Http.BaseAddress + "dashboard");
        await page.FillAsync("input[name=key]", "admin-test-key");
        await page.ClickAsync("button[type=submit]");
        await page.WaitForSelectorAsync("body[data-loaded=true]", new() { Timeout = 15_000 });
        Assert.Equal("3", await page.GetAttributeAsync("#pending-note", "data-queued"));
        Assert.Equal("1", await page.GetAttributeAsync("#pending-note", "data-batches"));
        var rows = await page.Locator("[data-testid=pending] tr").AllTextContentsAsync();
        Assert.Equal(3, rows.Count); // the header, the queue, the batch
        Assert.Contains(rows, r => r.Contains("queued jobs", StringComparison.Ordinal) && r.Contains("gpt-4o-mini", StringComparison.Ordinal));
        Assert.Contains(rows, r => r.StartsWith("batch", StringComparison.Ordinal) && r.Contains("msgbatch_bsr", StringComparison.Ordinal));
        Assert.Empty(errors);
    }
}
