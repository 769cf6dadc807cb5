using Bursar.Hosting;
using System.CommandLine;
using System.Globalization;
using Spectre.Console;
using Bursar.Core.Pricing;
using Bursar.Gateway.Hosting;

namespace Bursar.Cli.Commands;

internal static class PricesCommand
{
    public static Command Create()
    {
        var prices = new Command("prices", "The price catalog: built-in prices, imported LiteLLM prices, configured overrides");
        var file = new Argument<FileInfo>("file") { Description = "LiteLLM's model_prices_and_context_window.json" };
        var import = new Command("import", "Import LiteLLM's price file into the store (overrides built-in prices for the same model)") { file };
        import.SetAction((pr, ct) =>
        {
            var f = pr.GetValue(file)!;
            if (!f.Exists)
            {
                Console.Error.WriteLine($"No such file: {f.FullName}");
                return Task.FromResult(2);
            }
            using var s = f.OpenRead();
            var entries = PriceFiles.ReadLiteLlm(s, out var skipped);
            var n = CliOptions.OpenStore(pr, create: true).ImportPrices(entries, TimeProvider.System.GetUtcNow());
            Console.WriteLine($"Imported {n} priced models from {f.Name} ({skipped} entries skipped: non-chat modes, documentation or no token prices).");
            return Task.FromResult(0);
        });
        var filter = new Option<string?>("--filter") { Description = "Only models whose id contains this text" };
        var list = new Command("list", "List the effective catalog (USD per million tokens)") { filter };
        list.SetAction((pr, ct) =>
        {
            var catalog = BursarServices.LoadCatalog(CliOptions.OpenStore(pr), new BursarOptions());
            var f = pr.GetValue(filter);
            var models = catalog.Models.Where(m => f is null || m.Model.Contains(f, StringComparison.OrdinalIgnoreCase)).ToArray();
            Terminal.Line("Prices in US$ per 1M tokens, per token class: input, output, cache read, cache write (5-minute and 1-hour TTL).");
            var table = Terminal.NewTable(Col.L("model"), Col.L("provider"), Col.R("input $/1M"), Col.R("output $/1M"), Col.R("cache read $/1M"),
                Col.R("cache write 5m $/1M"), Col.R("cache write 1h $/1M"), Col.L("source"), Col.L("long-context tier"));
            foreach (var m in models)
                table.AddRow(Terminal.Safe(m.Model), Terminal.Safe(m.Provider), PerMillion(m.Rates.Input), PerMillion(m.Rates.Output), PerMillion(m.Rates.CacheRead),
                    PerMillion(m.Rates.CacheWrite5m), PerMillion(m.Rates.CacheWrite1h), Terminal.Safe(m.Source.ToString()),
                    m.LongContext.Count > 0 ? Terminal.Safe($"higher prices above {m.LongContext[0].AboveInputTokens / 1000}k input tokens") : "");
            Terminal.Write(table);
            Terminal.Line(f is null ? $"{catalog.Count} models." : $"{models.Length} of {catalog.Count} models match '{Bursar.Core.Reporting.TerminalText.Escape(f)}'.");
            return Task.FromResult(0);
        });
        prices.Subcommands.Add(import);
        prices.Subcommands.Add(list);
        return prices;
    }

    /// <summary>A price per million tokens, padded so the decimal points of a right-aligned column line up ("-" when the class has no price).</summary>
    internal static string PerMillion(decimal? d)
    {
        if (d is null) return "-    ";
        var s = d.Value.ToString("#,0.00##", CultureInfo.InvariantCulture);
        return s + new string(' ', 4 - (s.Length - s.IndexOf('.') - 1));
    }
}
