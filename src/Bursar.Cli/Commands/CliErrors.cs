using System.Net.Sockets;
using Microsoft.Extensions.Options;

namespace Bursar.Cli.Commands;

/// <summary>A problem the user can fix: printed as one line, exit code 2.</summary>
internal sealed class CliException(string message) : Exception(message);

/// <summary>Turns what a command threw into one line on stderr that names the problem and the fix.</summary>
internal static class CliErrors
{
    public const int UsageError = 2;

    public static int Report(Exception e, bool verbose)
    {
        var root = e is AggregateException { InnerExceptions.Count: 1 } ag ? ag.InnerException! : e;
        Console.Error.WriteLine("bursar: " + Describe(root));
        if (verbose) Console.Error.WriteLine(root);
        else if (root is not (CliException or OptionsValidationException)) Console.Error.WriteLine("  (run with --verbose for the details)");
        return UsageError;
    }

    internal static string Describe(Exception e) => e switch
    {
        CliException c => c.Message,
        OptionsValidationException o => "configuration: " + string.Join("; ", o.Failures) + " Fix the value in appsettings.json, the environment or the --Bursar:... argument.",
        IOException when e.InnerException is SocketException { SocketErrorCode: SocketError.AddressAlreadyInUse } || e.Message.Contains("address already in use", StringComparison.OrdinalIgnoreCase)
            => $"{e.Message.TrimEnd('.')}. Another process listens there: stop it, or pick another address with --urls http://127.0.0.1:<port> (or --port <port>).",
        UnauthorizedAccessException => e.Message + " Check the permissions of the data directory (--data-dir).",
        InvalidOperationException or ArgumentException or FormatException or IOException when e.Message.Length > 0 => e.Message,
        _ => $"{e.GetType().Name}: {e.Message}",
    };
}
