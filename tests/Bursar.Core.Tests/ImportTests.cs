using Bursar.Core.Import;
using Bursar.Core.Pricing;
using Bursar.Core.Reporting;
using Bursar.Storage.Sqlite;
using Microsoft.Data.Sqlite;

namespace Bursar.Core.Tests;

public sealed class ImportTests
{
    private static readonly PriceCatalog Catalog = new(PriceFiles.LoadBuiltIn());

    private const string Csv = """
        timestamp,model,task type,input tokens,cached tokens,output tokens,cost,latency
        2026-11-01T09:00:00Z,gpt-4.1,classify,1000,200,100,0.0025,850
        2026-11-01T09:01:00Z,gpt-4.1,"summarize, long",1000,0,100,0.0100,900
        2026-11-01T09:02:00Z,mystery-model-9,classify,10,0,5,0.001,10
        2026-11-01T09:03:00Z,gpt-4.1,classify,ten,0,5,0.001,10
        not-a-date,gpt-4.1,classify,10,0,5,0.001,10
        2026-11-01T09:05:00Z,gpt-4.1,classify,10,0
        """;

    private static ImportResult Read(string text, string format = "csv", CallLogImportOptions? o = null) =>
        CallLogImporter.Read(new StringReader(text), format, Catalog, o ?? new CallLogImportOptions());

    [Fact]
    public void Csv_rows_are_priced_from_the_catalog_and_bad_rows_are_named()
    {
        var r = Read(Csv);
        Assert.Equal(3, r.Records.Count);
        var first = r.Records[0];
        // 800 uncached x $2/M + 200 cached x $0.50/M + 100 output x $8/M
        Assert.Equal(0.0025m, first.Cost);
        Assert.Equal(800, first.InputTokens);
        Assert.Equal(200, first.CacheReadTokens);
        Assert.Equal("classify", first.Task);
        Assert.Equal(850, first.LatencyMs);
        Assert.Equal("summarize, long", r.Records[1].Task);
        var mismatch = Assert.Single(r.CostMismatches);
        Assert.Equal(3, mismatch.Line);
        Assert.Contains("0.0100", mismatch.Message);
        Assert.Contains("0.0028", mismatch.Message); // 1000 x $2/M + 100 x $8/M
        var unpriced = Assert.Single(r.Unpriced);
        Assert.Contains("mystery-model-9", unpriced.Message);
        Assert.Null(r.Records[2].Cost);
        Assert.False(r.Records[2].Priced);
        Assert.Equal([5, 6, 7], r.Skipped.Select(s => s.Line));
        Assert.Contains("'ten' is not a whole number", r.Skipped[0].Message);
        Assert.Contains("'not-a-date' is not a date", r.Skipped[1].Message);
        Assert.Contains("has 5 fields, the header has 8", r.Skipped[2].Message);
    }

    [Fact]
    public void Jsonl_rows_take_tags_and_anthropic_shaped_input()
    {
        var jsonl = """
            {"timestamp": 1793523600, "model": "claude-haiku-4-5", "input_tokens": 1000, "cache_read_tokens": 4000, "output_tokens": 200, "tags": {"feature": "support", "team": "cx"}}
            {"timestamp": "2026-11-01T10:00:00Z", "model": "claude-haiku-4-5", "input_tokens": 10, "output_tokens": 2, "tags": "feature=search;customer=acme"}
            [1, 2]
            {broken
            """;
        var r = Read(jsonl, "jsonl", new CallLogImportOptions { InputExcludesCached = true, Tags = new Dictionary<string, string> { ["template"] = "v3" } });
        Assert.Equal(2, r.Records.Count);
        Assert.Equal(1000, r.Records[0].InputTokens);
        Assert.Equal(4000, r.Records[0].CacheReadTokens);
        // 1000 x $1/M + 4000 x $0.10/M + 200 x $5/M
        Assert.Equal(0.0024m, r.Records[0].Cost);
        Assert.Equal(("support", "cx", "v3"), (r.Records[0].Feature, r.Records[0].Team, r.Records[0].Template));
        Assert.Equal(("search", "acme"), (r.Records[1].Feature, r.Records[1].Customer));
        Assert.Equal(2, r.Skipped.Count);
        Assert.Contains("not a JSON object", r.Skipped[0].Message);
        Assert.Contains("not valid JSON", r.Skipped[1].Message);
    }

    [Fact]
    public void Openai_shaped_input_smaller_than_cached_is_refused_with_the_fix()
    {
        var r = Read("timestamp,model,input_tokens,cached_tokens,output_tokens\n2026-11-01,gpt-4.1,10,200,1\n");
        Assert.Contains("--input-excludes-cached", Assert.Single(r.Skipped).Message);
    }

    [Fact]
    public async Task Importing_the_same_file_twice_adds_its_rows_once_and_reports_see_them()
    {
        var dir = Path.Combine(Path.GetTempPath(), "bursar-import-" + Guid.NewGuid().ToString("N"));
        try
        {
            var store = new SqliteStore(Path.Combine(dir, "bursar.db"));
            // two identical lines are two calls: both stay
            var text = Csv + "\n2026-11-01T09:00:00Z,gpt-4.1,classify,1000,200,100,0.0025,850";
            await store.WriteAsync(Read(text).Records, default);
            await store.WriteAsync(Read(text).Records, default);
            Assert.Equal(4, await store.CountAsync(default));
            var report = await SpendReport.QueryAsync(store, ReportDimension.Task, new DateTimeOffset(2026, 11, 1, 0, 0, 0, TimeSpan.Zero), new DateTimeOffset(2026, 11, 2, 0, 0, 0, TimeSpan.Zero), default);
            Assert.Equal(0.0078m, report.Total.Cost); // 0.0025 x 2 + 0.0028, the unpriced row adds nothing
            Assert.Equal(1, report.Total.UnpricedCalls);
            Assert.Equal(3, report.Rows.Single(x => x.Group == "classify").Calls);
        }
        finally
        {
            SqliteConnection.ClearAllPools();
            Directory.Delete(dir, true);
        }
    }
}

public sealed class ImportFuzzTests
{
    [Fact]
    public void Hostile_and_random_input_is_skipped_with_a_reason_never_thrown()
    {
        var catalog = new PriceCatalog(PriceFiles.LoadBuiltIn());
        var rng = new Random(99);
        string[] pieces = ["timestamp", "model", "gpt-4.1", "\"", "\"\"", ",", "\n", "{", "}", "[", "]", "99999999999999999999999", "-5", "NaN", "1e400", "$", "tags", "=", ";",
            new string('{', 200), "2026-11-01T00:00:00Z", "\u0000", "\uFFFF", "\ud800", "input_tokens", "cost", "latency", "null", "true"];
        for (var round = 0; round < 300; round++)
        {
            var text = string.Concat(Enumerable.Range(0, rng.Next(1, 80)).Select(_ => pieces[rng.Next(pieces.Length)]));
            foreach (var format in new[] { "csv", "jsonl" })
            {
                var r = CallLogImporter.Read(new StringReader(text), format, catalog, new CallLogImportOptions());
                Assert.All(r.Skipped, p => Assert.False(string.IsNullOrWhiteSpace(p.Message)));
                Assert.All(r.Records, x => Assert.True(x.InputTokens >= 0 && x.OutputTokens >= 0));
            }
        }
        // a JSON line nested deeper than the parser allows is a skipped row, not a crash
        var deep = CallLogImporter.Read(new StringReader("{\"tags\":" + new string('[', 100) + "\n"), "jsonl", catalog, new CallLogImportOptions());
        Assert.Single(deep.Skipped);
    }
}
