using System.Diagnostics;
using Bursar.Core.Ledger;
using Bursar.Storage.Sqlite;

namespace Bursar.Extensions.AI.Tests;

/// <summary>samples/AgentLoop runs as a user runs it (no provider key: the Simulator) and does what the README says.</summary>
public sealed class SampleTests
{
    private static string SampleDll()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Bursar.slnx"))) dir = dir.Parent;
        var config = AppContext.BaseDirectory.Contains("/Debug/", StringComparison.Ordinal) ? "Debug" : "Release";
        return Path.Combine(dir!.FullName, "samples", "AgentLoop", "bin", config, "net10.0", "AgentLoop.dll");
    }

    [Fact]
    public async Task The_agent_loop_sample_runs_its_tool_loops_until_the_budget_refuses_and_the_ledger_has_every_call()
    {
        var data = Path.Combine(Path.GetTempPath(), "bursar-sample-" + Guid.NewGuid().ToString("N"));
        try
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in new[] { SampleDll(), "--data-dir", data }) psi.ArgumentList.Add(a);
            psi.Environment.Remove("OPENAI_API_KEY");
            using var p = Process.Start(psi)!;
            var output = await p.StandardOutput.ReadToEndAsync();
            var error = await p.StandardError.ReadToEndAsync();
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(2));
            Assert.True(p.ExitCode == 0, $"exit {p.ExitCode}: {error}\n{output}");
            Assert.Contains("run 1: answered", output);
            Assert.Contains("run 3: refused by the budget: Customer 'acme' day budget of $0.0004", output);
            var store = new SqliteStore(Path.Combine(data, "bursar.db"));
            var rows = (await store.ReadAsync(new LedgerQuery(), default)).Where(r => r.Feature == "sample-agent").ToList();
            Assert.Equal(6, rows.Count); // two model calls per tool loop (tool call, then the answer), the third run's second call refused
            Assert.Equal(1, rows.Count(r => r.Outcome == "refused" && r.ErrorType == "budget_exceeded"));
            Assert.All(rows, r => Assert.Equal("acme", r.Customer));
            Assert.Equal(3, rows.Select(r => r.RunId).Distinct().Count());
            Assert.Contains($"ledger rows: 6, spent ${rows.Sum(r => r.Cost ?? 0):F6}", output);
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try { Directory.Delete(data, true); } catch (IOException) { }
        }
    }
}
