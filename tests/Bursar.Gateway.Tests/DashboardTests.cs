using System.Globalization;
using System.Net;
using Bursar.Gateway.Demo;
using Microsoft.Playwright;
using Xunit.Abstractions;

namespace Bursar.Gateway.Tests;

/// <summary>
/// The dashboard in a real browser: Debian's headless Chromium driven by Playwright, against a gateway filled by the demo workload.
/// Saves a screenshot of the demo workload (docs/dashboard.png is that file), then checks that the charts render with the ledger's totals
/// and that a hostile tag shows as text.
/// </summary>
public sealed class DashboardTests(ITestOutputHelper output)
{
    private const string Chromium = "/usr/bin/chromium";

    [Fact]
    public async Task Dashboard_draws_the_ledger_totals_in_its_charts()
    {
        var gw = new ConfiguredGateway([]);
        await gw.InitializeAsync();
        try
        {
            const int calls = 150;
            await DemoWorkload.DriveAsync(gw.Services, gw.BaseUrl, calls - 1, 8, null, default);
            // every call leaves a ledger row (refusals too); wait for the writer to land them
            for (var i = 0; i < 200 && await gw.Store.CountAsync(default) < calls - 1; i++) await Task.Delay(25);

            using var playwright = await Playwright.CreateAsync();
            await using var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = Chromium, Headless = true, Args = ["--no-sandbox"] });
            var page = await browser.NewPageAsync(new() { ViewportSize = new() { Width = 1440, Height = 900 } });
            var errors = new List<string>();
            page.Console += (_, m) => { if (m.Type == "error") errors.Add(m.Text); };
            page.PageError += (_, e) => errors.Add(e);

            // without the admin key: the sign-in page; a wrong key is refused with a message
            var first = await page.GotoAsync(gw.BaseUrl + "/dashboard");
            Assert.Equal((int)HttpStatusCode.Unauthorized, first!.Status);
            await page.FillAsync("input[name=key]", "not-the-key");
            await page.ClickAsync("button[type=submit]");
            Assert.Contains("not the admin key", await page.TextContentAsync(".error"));
            errors.Clear(); // the 401s above are logged by the browser as failed loads
            await page.FillAsync("input[name=key]", GatewayFixture.AdminKey);
            await page.ClickAsync("button[type=submit]");
            await page.WaitForSelectorAsync("body[data-loaded=true]", new() { Timeout = 15_000 });

            // the screenshot (docs/dashboard.png) shows the demo workload alone, before the hostile tag below joins it
            var shot = Path.Combine(AppContext.BaseDirectory, "dashboard.png");
            await page.ScreenshotAsync(new() { Path = shot, FullPage = true });
            Assert.True(new FileInfo(shot).Length > 10_000);
            Assert.Equal(DemoWorkload.Mix.Length, await page.Locator("svg[data-chart=by-feature] g[data-value]").CountAsync());
            output.WriteLine($"screenshot: {shot}");

            // a hostile tag value: it must show as text, never run
            const string hostile = "<img src=x onerror=\"window.__xss=1\">";
            using (var req = gw.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""", feature: hostile))
            using (var resp = await gw.Http.SendAsync(req)) Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
            for (var i = 0; i < 200 && await gw.Store.CountAsync(default) < calls; i++) await Task.Delay(25);
            var rows = await gw.Store.ReadAsync(new Bursar.Core.Ledger.LedgerQuery { Limit = 100_000 }, default);
            Assert.Equal(calls, rows.Count);
            var spend = rows.Sum(r => r.Cost ?? 0);
            var saved = rows.Sum(r => r.SavingResponseCache + r.SavingPromptCache + r.SavingRouting + r.SavingOutputCap + r.SavingBatch + r.SavingCompaction);
            Assert.True(spend > 0 && saved > 0);
            await page.ReloadAsync();
            await page.WaitForSelectorAsync("body[data-loaded=true]", new() { Timeout = 15_000 });

            decimal Value(string attr) => decimal.Parse(attr, NumberStyles.Float, CultureInfo.InvariantCulture);
            async Task<decimal> Attr(string selector, string name) => Value((await page.GetAttributeAsync(selector, name))!);
            // the headline numbers are the ledger's
            Assert.Equal((double)spend, (double)await Attr("[data-testid=kpi-spend]", "data-value"), 9);
            Assert.Equal((double)saved, (double)await Attr("[data-testid=kpi-saved]", "data-value"), 9);
            Assert.Equal(calls, await Attr("[data-testid=kpi-calls]", "data-value"));
            Assert.Equal(rows.Count(r => !r.Priced), await Attr("[data-testid=kpi-unpriced]", "data-value"));
            Assert.Equal(rows.Count(r => r.Outcome == "refused"), await Attr("[data-testid=kpi-refused]", "data-value"));
            // shown as the dashboard formats money: cents from $1, four decimals below
            // and an unpriced call keeps the total visibly unknown: "+ unpriced", never a silent sum
            Assert.Equal("$" + spend.ToString(spend >= 1 ? "0.00" : "0.0000", CultureInfo.InvariantCulture) + (rows.Any(r => !r.Priced) ? " + unpriced" : ""), await page.TextContentAsync("[data-testid=kpi-spend]"));

            // every breakdown chart adds up to the same spend, with one bar per group
            foreach (var (chart, groups) in new[] { ("by-feature", rows.Select(r => r.Feature).Distinct().Count()), ("by-team", rows.Select(r => r.Team).Distinct().Count()), ("by-model", rows.Select(r => r.ServedModel).Distinct().Count()), ("by-customer", rows.Select(r => r.Customer).Distinct().Count()) })
            {
                Assert.Equal((double)spend, (double)await Attr($"svg[data-chart={chart}]", "data-total"), 9);
                Assert.Equal(groups, await page.Locator($"svg[data-chart={chart}] g[data-value]").CountAsync());
            }
            Assert.Equal((double)spend, (double)await Attr("svg[data-chart=trend]", "data-total"), 9);
            Assert.Equal((double)saved, (double)await Attr("svg[data-chart=savings]", "data-total"), 9);
            // the biggest feature's bar carries its own spend
            var top = rows.GroupBy(r => r.Feature).Select(g => (g.Key, Cost: g.Sum(r => r.Cost ?? 0))).OrderByDescending(g => g.Cost).First();
            Assert.Equal((double)top.Cost, (double)await Attr($"svg[data-chart=by-feature] g[data-label='{top.Key}']", "data-value"), 9);
            // routing shares count every call; budgets show the demo's customer budget with its spend; the what-if ladder has 6 rungs
            Assert.Equal(calls, await Attr("svg[data-chart=routing]", "data-total"));
            Assert.Equal(1, await page.Locator("[data-budget=demo-customer-e]").CountAsync());
            Assert.Equal(6, await page.Locator("svg[data-chart=whatif] g[data-value]").CountAsync());
            Assert.True(await page.Locator("svg[data-chart=cache] g[data-value]").CountAsync() > 0);
            Assert.True(errors.Count == 0, string.Join("\n", errors));
            Assert.Equal("undefined", await page.EvaluateAsync<string>("typeof window.__xss"));
            Assert.Equal(1, await page.Locator("svg[data-chart=by-feature] text", new() { HasTextString = "<img src=x" }).CountAsync());
            Assert.Contains("default-src 'self'", first.Headers["content-security-policy"]);

            // signing out drops the cookie
            await page.ClickAsync("header button[type=submit]");
            Assert.Contains("admin key", await page.TextContentAsync("body"));
        }
        finally
        {
            await gw.DisposeAsync();
        }
    }
}
