using Bursar.Core.Ledger;
using Bursar.Core.Reporting;

namespace Bursar.Core.Tests;

public sealed class SpendReportTests
{
    private static LedgerRecord R(string feature, string model, decimal? cost, long input = 10, long output = 5) => new()
    {
        Id = Guid.NewGuid().ToString("N"), Timestamp = DateTimeOffset.UnixEpoch, Dialect = "openai", Outcome = "ok",
        Feature = feature, ServedModel = model, Cost = cost, Priced = cost is not null, InputTokens = input, OutputTokens = output,
    };

    [Fact]
    public void Groups_sum_exactly_and_shares_add_up()
    {
        var records = new[] { R("a", "m1", 0.30m), R("a", "m2", 0.10m), R("b", "m1", 0.60m), R("c", "m3", null) };
        var report = SpendReport.Build(records, ReportDimension.Feature);
        Assert.Equal(["b", "a", "c"], report.Rows.Select(r => r.Group));
        Assert.Equal(1.00m, report.Total.Cost);
        Assert.Equal(0.40m, report.Rows.Single(r => r.Group == "a").Cost);
        Assert.Equal(0.20m, report.Rows.Single(r => r.Group == "a").CostPerCall);
        Assert.Equal(0.6m, report.Rows[0].Share);
        Assert.Equal(1, report.Total.UnpricedCalls);
        Assert.Equal(1, report.Rows.Single(r => r.Group == "c").UnpricedCalls);
        Assert.Contains("unknown", report.ToTable());
        Assert.Contains("WARNING", report.ToTable());
        Assert.Equal("b / m1", report.TopDrivers[0].Group);
    }

    [Fact]
    public void Csv_has_a_row_per_group_and_a_total()
    {
        var csv = SpendReport.Build([R("x,y", "m", 0.5m)], ReportDimension.Feature).ToCsv().Trim().Split('\n');
        Assert.Equal(3, csv.Length);
        Assert.StartsWith("\"x,y\",1,0,10,0,5,0.5,", csv[1]);
        Assert.StartsWith("TOTAL,1,", csv[2]);
    }

    [Fact]
    public void Control_characters_in_stored_tags_are_escaped_in_the_table_the_drivers_and_the_csv()
    {
        var report = SpendReport.Build([R("\u001b[2J\u001b[31mPWNED", "m", 0.5m)], ReportDimension.Feature);
        foreach (var text in new[] { report.ToTable(), report.ToCsv() })
        {
            Assert.DoesNotContain('\u001b', text);
            Assert.Contains("\\x1B[2J\\x1B[31mPWNED", text);
        }
    }
}
