using System.CommandLine;
using Bursar.Core.Storage;
using Bursar.Hosting;
using Bursar.Storage.Sqlite;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;

namespace Bursar.Cli.Commands;

internal static class CliOptions
{
    public static readonly Option<string> DataDir = new("--data-dir")
    {
        Description = "Folder holding bursar.db (ledger, keys, imported prices) and the ledger journal",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("BURSAR_DATA_DIR") ?? ".bursar",
        Recursive = true,
    };

    public static readonly Option<bool> Verbose = new("--verbose") { Description = "On an error, print the full exception too", Recursive = true };

    /// <summary>
    /// The store in the data directory. Commands that only read (or change what exists) refuse a folder with no
    /// <c>bursar.db</c>, so a mistyped <c>--data-dir</c> is an error and not an empty report; commands that create
    /// things (<paramref name="create"/>) make the folder and say so.
    /// </summary>
    /// <remarks>
    /// With <c>Bursar__Store=postgres</c> and <c>Bursar__Postgres__ConnectionString</c> in the environment (the names <c>bursar serve</c>
    /// reads its configuration from too), the commands work on that PostgreSQL database instead, and the data directory is not consulted.
    /// </remarks>
    public static IBursarStore OpenStore(ParseResult pr, bool create = false)
    {
        var options = StoreOptions();
        if (options.UsesPostgres) return BursarServices.OpenStore(options, TimeProvider.System);
        var dir = DataDirectory(pr, create);
        return new SqliteStore(Path.Combine(dir, "bursar.db"));
    }

    /// <summary><c>Bursar:Store</c> and <c>Bursar:Postgres</c> from the environment (<c>Bursar__Store</c>, <c>Bursar__Postgres__ConnectionString</c>), validated.</summary>
    public static BursarOptions StoreOptions()
    {
        var config = new Microsoft.Extensions.Configuration.ConfigurationBuilder().AddEnvironmentVariables().Build();
        var options = new BursarOptions();
        Microsoft.Extensions.Configuration.ConfigurationBinder.Bind(config.GetSection(BursarOptions.Section), options);
        try { options.Validate(); }
        catch (InvalidOperationException e) { throw new CliException(e.Message); }
        return options;
    }

    /// <summary>Checks the data directory: a file there is an error; a missing one is created (and said) or refused.</summary>
    public static string DataDirectory(ParseResult pr, bool create)
    {
        var dir = pr.GetValue(DataDir)!;
        var full = Path.GetFullPath(dir);
        if (File.Exists(full)) throw new CliException($"--data-dir {dir} is a file, not a folder: pass the folder that holds bursar.db.");
        if (create)
        {
            if (!Directory.Exists(full))
            {
                Directory.CreateDirectory(full);
                Console.Error.WriteLine($"Created the data directory {full}.");
            }
            return dir;
        }
        if (!File.Exists(Path.Combine(full, "bursar.db")))
            throw new CliException($"No Bursar data in {full} (no bursar.db there). Pass --data-dir with the folder `bursar serve` uses (or set BURSAR_DATA_DIR), or run `bursar demo` to make some.");
        return dir;
    }

    /// <summary>The host's own "hosting failed to start" trace is left out: the CLI prints the cause as one line (CliErrors).</summary>
    public static void QuietHost(Microsoft.AspNetCore.Builder.WebApplicationBuilder b, LogLevel? minimum)
    {
        if (minimum is { } level) b.Logging.SetMinimumLevel(level);
        b.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.None);
    }

    /// <summary>Configuration arguments for the gateway host from the CLI's options.</summary>
    public static string[] HostArgs(ParseResult pr, string urls, IEnumerable<string>? extra = null, string? dataDirectory = null) =>
        [$"--urls={urls}", $"--Bursar:DataDirectory={dataDirectory ?? DataDirectory(pr, create: true)}", .. extra ?? []];

    /// <summary>True when the user named the data directory (<c>--data-dir</c> or <c>BURSAR_DATA_DIR</c>).</summary>
    public static bool DataDirectoryGiven(ParseResult pr) =>
        pr.GetResult(DataDir) is { Implicit: false } || Environment.GetEnvironmentVariable("BURSAR_DATA_DIR") is { Length: > 0 };

    /// <summary>
    /// Arguments that are not options of the command: configuration overrides (<c>--Bursar:Section:Key=value</c>,
    /// <c>--Logging:...</c>) are passed to the host; anything else is an error naming it.
    /// </summary>
    public static string[] ConfigurationOverrides(IEnumerable<string> unmatched)
    {
        var list = unmatched.ToArray();
        for (var i = 0; i < list.Length; i++)
        {
            var t = list[i];
            if (t.StartsWith("--", StringComparison.Ordinal) && t.Contains(':', StringComparison.Ordinal)) continue;
            // "--Bursar:X value" form: the value of the previous override
            if (i > 0 && list[i - 1].StartsWith("--", StringComparison.Ordinal) && list[i - 1].Contains(':', StringComparison.Ordinal) && !list[i - 1].Contains('=', StringComparison.Ordinal) && !t.StartsWith("--", StringComparison.Ordinal)) continue;
            throw new CliException($"Unknown option or argument '{t}'. Configuration overrides look like --Bursar:Section:Key=value; see `bursar <command> --help` for the options.");
        }
        return list;
    }
}
