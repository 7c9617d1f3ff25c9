// Apache Commons Net FTPClient / FTPSClient against the gateway: upload, list, rename, download,
// compare bytes. usage: java CommonsNetClient MODE HOST PORT USER PASSWORD (MODE: plain, explicit)
//
// setFileType(BINARY) is what keeps the bytes exact: commons-net converts line endings itself in
// its default ASCII type, whatever the server does (docs/ftp.md, "ASCII and binary mode").
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.util.Arrays;
import java.util.Random;
import org.apache.commons.net.ftp.FTP;
import org.apache.commons.net.ftp.FTPClient;
import org.apache.commons.net.ftp.FTPFile;
import org.apache.commons.net.ftp.FTPReply;
import org.apache.commons.net.ftp.FTPSClient;
import org.apache.commons.net.util.TrustManagerUtils;

public class CommonsNetClient {
    static void check(boolean ok, String what, FTPClient ftp) {
        if (!ok) {
            System.err.println("commons-net: " + what + ": " + ftp.getReplyString());
            System.exit(1);
        }
    }

    public static void main(String[] args) throws Exception {
        String mode = args[0], host = args[1], user = args[3], password = args[4];
        int port = Integer.parseInt(args[2]);
        FTPClient ftp;
        if (mode.equals("explicit")) {
            FTPSClient ftps = new FTPSClient(false);
            ftps.setTrustManager(TrustManagerUtils.getAcceptAllTrustManager());
            ftp = ftps;
        } else {
            ftp = new FTPClient();
        }
        ftp.setConnectTimeout(30000);
        ftp.setDefaultTimeout(30000);
        ftp.connect(host, port);
        check(FTPReply.isPositiveCompletion(ftp.getReplyCode()), "greeting", ftp);
        check(ftp.login(user, password), "login", ftp);
        if (ftp instanceof FTPSClient) {
            ((FTPSClient) ftp).execPBSZ(0);
            ((FTPSClient) ftp).execPROT("P");
        }
        ftp.enterLocalPassiveMode();
        check(ftp.setFileType(FTP.BINARY_FILE_TYPE), "TYPE I", ftp);
        check(ftp.makeDirectory("java"), "MKD", ftp);
        check(ftp.changeWorkingDirectory("java"), "CWD", ftp);
        byte[] data = new byte[200000];
        new Random(7).nextBytes(data);
        // CR and LF bytes in plenty: a line-ending conversion anywhere would change the size.
        for (int i = 0; i < data.length; i += 97) data[i] = (byte) ((i & 1) == 0 ? '\n' : '\r');
        check(ftp.storeFile("data.bin", new ByteArrayInputStream(data)), "STOR", ftp);
        FTPFile[] files = ftp.listFiles();
        check(files.length == 1 && files[0].getName().equals("data.bin") && files[0].getSize() == data.length,
              "LIST " + Arrays.toString(files), ftp);
        check(ftp.rename("data.bin", "final.bin"), "RNFR/RNTO", ftp);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        check(ftp.retrieveFile("final.bin", out), "RETR", ftp);
        check(Arrays.equals(out.toByteArray(), data), "downloaded bytes differ", ftp);
        check(ftp.logout(), "QUIT", ftp);
        ftp.disconnect();
    }
}
